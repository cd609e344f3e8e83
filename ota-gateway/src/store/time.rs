//! File times as filuxe speaks them: float seconds since the epoch (Python's
//! `time.time()` or `os.path.getmtime()`, sent as `repr` in an upload's `?time=` and
//! read back from `filelist` as a JSON number), kept on disk as a modification time
//! in whole nanoseconds.
//!
//! Both directions are exact by construction, so a time an upload asked for comes back
//! from a listing as the very same float (filuxe's forwarder compares them with `!=`):
//!
//! - seconds → nanoseconds: the nanosecond nearest to the float, from its exact
//!   decimal expansion (Rust's fixed-precision formatting rounds exactly);
//! - nanoseconds → seconds: the float nearest to `sec.nnnnnnnnn` (Rust's float parser
//!   rounds exactly). For any time after April 1970 (2²³ s) a float is more than a
//!   nanosecond from its neighbours, so the nearest float to the nearest nanosecond is
//!   the float the client sent.
//!
//! No float arithmetic on the way (`ns as f64 / 1e9` is off by up to 128 ns before the
//! division even starts, more than half the spacing of today's times).
//!
//! What identifies an upload's time in the store's own records is [`bits`]: an
//! integer, exact through any text round trip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time an upload asks for, as stored in the partial's records: the bit pattern of
/// the float (an integer, compared exactly). `None` for no time, 0 or -0 alike.
pub fn bits(seconds: Option<f64>) -> Option<u64> {
    seconds.filter(|t| *t > 0.0).map(f64::to_bits)
}

/// The modification time to give a file uploaded with `seconds` (finite, positive):
/// the nanosecond nearest to it.
pub fn to_system_time(seconds: f64) -> SystemTime {
    let text = format!("{seconds:.9}");
    let (sec, nsec) = text.split_once('.').expect("a fixed-precision float has a point");
    let sec: u64 = sec.parse().expect("the whole seconds of a positive float");
    let nsec: u32 = nsec.parse().expect("nine digits");
    UNIX_EPOCH + Duration::new(sec, nsec)
}

/// The float seconds a listing reports for a modification time of `mtime_ns`
/// nanoseconds since the epoch: the float nearest to it.
pub fn seconds(mtime_ns: i128) -> f64 {
    let abs = mtime_ns.unsigned_abs();
    let sign = if mtime_ns < 0 { "-" } else { "" };
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000).parse().expect("a decimal number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: SystemTime) -> i128 {
        t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
    }

    /// Python's `repr(time.time())` values (some of which serde_json's default parser
    /// reads back as a neighbouring float) come back from a listing bit for bit.
    #[test]
    fn python_times_survive_the_disk_and_a_listing_exactly() {
        for text in ["1796555001.0810335", "1765432109.9999998", "1700000000.0000002", "1733333333.3333333"] {
            let sent: f64 = text.parse().unwrap();
            let back = seconds(ns(to_system_time(sent)));
            assert_eq!(back.to_bits(), sent.to_bits(), "{text}");
            assert_eq!(format!("{back}"), text, "the listing prints what Python sent");
        }
    }

    /// The simple arithmetic this module replaces is not exact: a proof that the test
    /// above tests something.
    #[test]
    fn float_arithmetic_on_nanoseconds_is_not_exact() {
        let misses = (0..10_000u64)
            .map(|i| f64::from_bits(1_796_555_001.081_033_5_f64.to_bits() + i * 7919))
            .filter(|t| {
                let n = ns(to_system_time(*t));
                n as f64 / 1e9 != *t && seconds(n) == *t
            })
            .count();
        assert!(misses > 0, "ns as f64 / 1e9 would do");
    }

    #[test]
    fn nanoseconds_and_signs() {
        assert_eq!(ns(to_system_time(1.5)), 1_500_000_000);
        assert_eq!(ns(to_system_time(1_600_000_000.000_000_001)), 1_600_000_000_000_000_000);
        assert_eq!(seconds(1_500_000_000), 1.5);
        assert_eq!(seconds(-1_500_000_000), -1.5);
        assert_eq!(seconds(0), 0.0);
        // Beyond an i64 of nanoseconds (2262): still exact.
        assert_eq!(seconds(ns(to_system_time(46_818_641_042.044_6))), 46_818_641_042.044_6);
        assert_eq!(bits(Some(0.0)), None);
        assert_eq!(bits(Some(-0.0)), None);
        assert_eq!(bits(None), None);
        assert_eq!(bits(Some(2.5)), Some(2.5f64.to_bits()));
    }
}
