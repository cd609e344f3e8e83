//! Answering a download of a prepared payload: Range (one range), ETag,
//! If-None-Match, If-Range, HEAD. The body is a slice of the memory-mapped
//! payload: no copy, no file I/O on the request path.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use crate::error::Error;
use crate::state::Ready;

/// What a Range header asks of a payload of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header (absent, malformed, or several ranges): send it all.
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A well-formed range that selects nothing.
    Unsatisfiable,
}

/// Parses a `Range` header value for a payload of `size` bytes (RFC 9110 §14.1.2).
/// Multiple ranges are answered in full rather than as multipart.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Partial { start: size.saturating_sub(n), end: size - 1 },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=N- and bytes=N-M.
        (false, _) => {
            let Some(start) = parse(first) else { return RangeRequest::Full };
            let end = if last.is_empty() { Some(u64::MAX) } else { parse(last) };
            match end {
                None => RangeRequest::Full,
                Some(end) if end < start => RangeRequest::Full,
                Some(_) if start >= size => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Partial { start, end: end.min(size - 1) },
            }
        }
        (true, true) => RangeRequest::Full,
    }
}

/// Whether an `If-None-Match` value matches the ETag (weak comparison).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The response for a download of `ready` (GET or HEAD; axum drops HEAD bodies).
pub fn respond(headers: &HeaderMap, ready: &Ready) -> Result<Response, Error> {
    let etag = ready.etag.to_str().unwrap_or_default();
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if etag_matches(inm, etag) {
            return Ok(with_common(Response::builder().status(StatusCode::NOT_MODIFIED), ready)
                .body(Body::empty())
                .expect("valid response"));
        }
    }
    let bytes = &ready.payload.bytes;
    let size = bytes.len() as u64;
    let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == ready.etag.as_bytes());
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_ok => parse_range(value, size),
        _ => RangeRequest::Full,
    };
    let builder = with_common(Response::builder(), ready)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, ready.disposition.clone());
    let response = match range {
        RangeRequest::Full => {
            builder.status(StatusCode::OK).header(header::CONTENT_LENGTH, size).body(Body::from(bytes.clone()))
        }
        RangeRequest::Partial { start, end } => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start + 1)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
            .body(Body::from(bytes.slice(start as usize..=end as usize))),
        RangeRequest::Unsatisfiable => return Err(Error::RangeNotSatisfiable { size }),
    };
    Ok(response.expect("valid response"))
}

fn with_common(builder: axum::http::response::Builder, ready: &Ready) -> axum::http::response::Builder {
    builder.header(header::ETAG, ready.etag.clone()).header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=90-1000", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=x-1", 100), Full);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
