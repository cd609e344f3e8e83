//! The write guard every upload surface shares (a store's uploads and deletes, a
//! stream's uploads and deletes), so they cannot drift apart:
//!
//! 1. the write arrived over TLS, unless the surface allows plain writes
//!    (`allowPlainWrites`). Checked first: a plain write is refused whatever key it
//!    carries, so a key sent in the clear is never confirmed or denied;
//! 2. it carries the surface's write secret ([`super::auth::authorize`]): 401 without
//!    one, 403 when wrong; a surface with no secret lets nobody write.
//!
//! Each surface answers a refusal in its own wire format and says where to allow plain
//! writes in its own words ([`Refused::PlainHttp`]).

use axum::http::HeaderMap;

use super::auth::{authorize, Secret};
use super::Error;
use crate::server::Transport;

/// Why a write was refused.
#[derive(Debug)]
pub enum Refused {
    /// It came over plain HTTP to a surface that wants TLS (a 403 the surface words).
    PlainHttp,
    /// No secret (401), or a wrong one (403).
    Credential(Error),
}

/// Whether a write that came over `transport` with `headers` may proceed, on a surface
/// that allows plain writes or not and whose write secret is `secret`.
pub fn check(
    transport: Transport,
    headers: &HeaderMap,
    allow_plain_writes: bool,
    secret: Option<&Secret>,
) -> Result<(), Refused> {
    if !transport.is_tls() && !allow_plain_writes {
        return Err(Refused::PlainHttp);
    }
    let secret = secret.ok_or(Refused::Credential(Error::Unauthorized))?;
    authorize(headers, secret).map_err(Refused::Credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key(value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(axum::http::HeaderName::from_static("key"), HeaderValue::from_static(value))])
    }

    #[test]
    fn tls_first_then_the_secret() {
        let secret = Secret::new("k");
        let (tls, plain) = (Transport::Tls, Transport::Plain);
        assert!(check(tls, &key("k"), false, Some(&secret)).is_ok());
        assert!(check(plain, &key("k"), true, Some(&secret)).is_ok());
        // Plain without allowPlainWrites: refused whatever the key, right or wrong.
        assert!(matches!(check(plain, &key("k"), false, Some(&secret)), Err(Refused::PlainHttp)));
        assert!(matches!(check(plain, &key("x"), false, Some(&secret)), Err(Refused::PlainHttp)));
        assert!(matches!(check(plain, &HeaderMap::new(), false, None), Err(Refused::PlainHttp)));
        // Then the secret: none presented, a wrong one, none configured.
        assert!(matches!(
            check(tls, &HeaderMap::new(), false, Some(&secret)),
            Err(Refused::Credential(Error::Unauthorized))
        ));
        assert!(matches!(check(tls, &key("x"), false, Some(&secret)), Err(Refused::Credential(Error::Forbidden(_)))));
        assert!(matches!(check(tls, &key("k"), false, None), Err(Refused::Credential(Error::Unauthorized))));
        assert!(matches!(
            check(tls, &key(" "), false, Some(&Secret::new(""))),
            Err(Refused::Credential(Error::Forbidden(_)))
        ));
    }
}
