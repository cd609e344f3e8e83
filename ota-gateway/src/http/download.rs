//! Answering a download of a body held in memory or mapped from a file: Range (one
//! range), ETag, If-None-Match, If-Range, HEAD. Any surface serves a file this way:
//! map it once (see [`crate::sendfile::map_payload`]), keep a [`Download`], and
//! answer each request with [`Download::respond`]. The response body is a slice of
//! the `Bytes` given, never a copy, so bodies of a mapped file leave through the
//! zero-copy `sendfile` path of device connections.

use axum::body::Body;
use axum::http::response::Builder;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::Error;

/// One downloadable body and the headers that describe it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Download {
    /// The whole body (typically a memory map of an immutable file).
    pub body: Bytes,
    /// The strong ETag, quotes included (`"<sha256 hex>"`).
    pub etag: HeaderValue,
    pub content_type: HeaderValue,
    /// `Content-Disposition`, when the client should save under a given name.
    pub disposition: Option<HeaderValue>,
}

/// What a Range header asks of a payload of a given size.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable Range header (absent, malformed, or several ranges): send it all.
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A well-formed range that selects nothing.
    Unsatisfiable,
}

/// Parses a `Range` header value for a payload of `size` bytes (RFC 9110 §14.1.2).
/// Multiple ranges are answered in full rather than as multipart.
fn parse_range(value: &str, size: u64) -> RangeRequest {
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
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// Whether the request's `If-None-Match` matches `etag`, so the answer is a 304: the
/// one rule of every surface's conditional GET (mapped files here, generated documents
/// such as a stream's index elsewhere).
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.to_str().unwrap_or_default();
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|inm| etag_matches(inm, etag))
}

impl Download {
    /// The response to a GET or HEAD of this body (axum drops HEAD bodies) under the
    /// request's conditional and Range headers.
    pub fn respond(&self, headers: &HeaderMap) -> Result<Response, Error> {
        if not_modified(headers, &self.etag) {
            let response = self.common(Response::builder().status(StatusCode::NOT_MODIFIED)).body(Body::empty());
            return Ok(response.expect("valid response"));
        }
        let size = self.body.len() as u64;
        let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == self.etag.as_bytes());
        let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            Some(value) if if_range_ok => parse_range(value, size),
            _ => RangeRequest::Full,
        };
        let mut builder = self.common(Response::builder()).header(header::CONTENT_TYPE, self.content_type.clone());
        if let Some(disposition) = &self.disposition {
            builder = builder.header(header::CONTENT_DISPOSITION, disposition.clone());
        }
        let response = match range {
            RangeRequest::Full => {
                builder.status(StatusCode::OK).header(header::CONTENT_LENGTH, size).body(Body::from(self.body.clone()))
            }
            RangeRequest::Partial { start, end } => builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, end - start + 1)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
                .body(Body::from(self.body.slice(start as usize..=end as usize))),
            RangeRequest::Unsatisfiable => return Err(Error::RangeNotSatisfiable { size }),
        };
        Ok(response.expect("valid response"))
    }

    fn common(&self, builder: Builder) -> Builder {
        builder.header(header::ETAG, self.etag.clone()).header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
    }
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

    fn download() -> Download {
        Download {
            body: Bytes::from_static(b"0123456789"),
            etag: HeaderValue::from_static("\"abc\""),
            content_type: HeaderValue::from_static("application/octet-stream"),
            disposition: None,
        }
    }

    fn request(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn responds_to_conditional_and_range_requests() {
        let d = download();
        let full = d.respond(&HeaderMap::new()).unwrap();
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()[header::CONTENT_LENGTH], "10");
        assert!(full.headers().get(header::CONTENT_DISPOSITION).is_none());
        let part = d.respond(&request(&[(header::RANGE, "bytes=2-4")])).unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        let stale = d.respond(&request(&[(header::RANGE, "bytes=2-4"), (header::IF_RANGE, "\"old\"")])).unwrap();
        assert_eq!(stale.status(), StatusCode::OK);
        let cached = d.respond(&request(&[(header::IF_NONE_MATCH, "\"abc\"")])).unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert!(matches!(
            d.respond(&request(&[(header::RANGE, "bytes=10-")])),
            Err(Error::RangeNotSatisfiable { size: 10 })
        ));
        let named = Download { disposition: Some(HeaderValue::from_static("attachment")), ..download() };
        assert_eq!(named.respond(&HeaderMap::new()).unwrap().headers()[header::CONTENT_DISPOSITION], "attachment");
    }
}
