//! The gateway's side of the device census (`updraft_core::census`): the limits of what
//! it records, the budget flag's parsing, the expiry task. The firmware surface records
//! (`Firmware::census`), `GET /census` on the admin port exports it (`admin`).
//!
//! What is counted, per channel × version × state over 1 h, 24 h and 7 d (unique
//! devices, estimated):
//! - *offered*: the version a device was answered with (`/version`, a channel's info,
//!   the check's offer or the version it is up to date with);
//! - *downloaded*: the version of a binary served with its body (GET `/firmware` or a
//!   channel's `firmware`, 200 or 206; not HEAD, not 304);
//! - *running*: the OtaFlux routes' `current=`, the check's `version`.
//!
//! Only requests with a device id (`id=`, the check's `id`, else the subject of a
//! verified client certificate on the HTTPS port, `server::ClientSubject`) are
//! recorded; the others, and ids over [`MAX_ID`] bytes, are counted as anonymous polls
//! per channel (`updraft_gateway_anonymous_polls_total`). Answers never depend on the census. The id
//! is hashed at once and never stored, logged (the OtaFlux handlers log their query with
//! `id` redacted) or exported.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use updraft_core::census::Census;

/// Longest device id recorded; a longer one counts as an anonymous poll.
pub const MAX_ID: usize = 256;
/// Longest version recorded (a `current=` or a check's `version` longer is left out).
pub const MAX_VERSION: usize = 256;
/// The census's default memory budget (`--census-memory`).
pub const DEFAULT_MEMORY: usize = 16 << 20;
/// How often what is older than 7 d is dropped (also on every `GET /census`).
const EXPIRY_EVERY: Duration = Duration::from_secs(600);

/// A size flag that is not a number of bytes with an optional unit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a size: a number of bytes, optionally with B, KiB, MiB, GiB, kB, MB or GB (e.g. 16MiB)")]
pub struct SizeError(String);

/// Parses a byte size such as `16MiB`, `512KiB`, `20MB` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let invalid = || SizeError(text.to_owned());
    let number: usize = number.parse().map_err(|_| invalid())?;
    let unit: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    number.checked_mul(unit).ok_or_else(invalid)
}

/// Drops what is older than 7 d every [`EXPIRY_EVERY`], so memory is given back even
/// when nobody reads `/census`.
pub fn spawn_expiry(census: Arc<Census>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EXPIRY_EVERY);
        loop {
            every.tick().await;
            census.expire(SystemTime::now());
        }
    });
}

#[cfg(test)]
mod tests;
