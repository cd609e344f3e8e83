//! A time-budgeted property-test runner for the fuzz targets (`*/tests/fuzz_*.rs`).
//!
//! [`check`] runs a proptest strategy against a target. Under plain `cargo test` it
//! runs the configured case count (proptest's default 256, or `PROPTEST_CASES`, or the
//! target's own smaller count for slow targets): seconds in CI. With
//! `UPDRAFT_FUZZ_SECS=S` it runs fresh batches of random cases until `S` seconds have
//! passed, for the long campaigns run by hand (`e2e/scripts/fuzz.sh`). Either way it
//! prints `FUZZ <target>: N cases in S s, 0 panics` and, on a failed property or a
//! panic, fails the test with the (shrunk) input that did it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::arbitrary::any;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};

/// Cases per batch when running for a time budget.
const BATCH: u32 = 64;

/// The time budget per target asked for by `UPDRAFT_FUZZ_SECS`, if any.
pub fn budget() -> Option<Duration> {
    let secs = std::env::var("UPDRAFT_FUZZ_SECS").ok()?;
    let secs: f64 = secs.trim().parse().unwrap_or_else(|_| panic!("UPDRAFT_FUZZ_SECS={secs:?} is not a number"));
    Some(Duration::from_secs_f64(secs))
}

/// Runs `test` on inputs from `strategy`: the default case count, or for the
/// `UPDRAFT_FUZZ_SECS` budget. Panics (failing the calling test) with the minimal
/// failing input when a property fails or the target panics.
pub fn check<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    check_with(target, None, strategy, test)
}

/// [`check`] with at most `max_cases` cases per run when no time budget is set (for
/// targets that cost a connection or a file each).
pub fn check_with<S>(target: &str, max_cases: Option<u32>, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let defaults = Config::default();
    let config = |cases| Config { cases, failure_persistence: None, ..defaults.clone() };
    let count = AtomicU64::new(0);
    let counted = |value: S::Value| {
        count.fetch_add(1, Ordering::Relaxed);
        test(value)
    };
    let start = Instant::now();
    let outcome = match budget() {
        None => {
            let cases = max_cases.map_or(defaults.cases, |max| max.min(defaults.cases));
            TestRunner::new(config(cases)).run(&strategy, counted)
        }
        Some(budget) => {
            let mut seeds = TestRunner::new(config(BATCH));
            let mut outcome = Ok(());
            while outcome.is_ok() && start.elapsed() < budget {
                let rng = seeds.new_rng();
                outcome = TestRunner::new_with_rng(config(BATCH), rng).run(&strategy, counted);
            }
            outcome
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let cases = count.load(Ordering::Relaxed);
    match outcome {
        Ok(()) => println!("FUZZ {target}: {cases} cases in {secs:.1} s, 0 panics"),
        Err(TestError::Fail(why, input)) => {
            panic!("FUZZ {target}: failed after {cases} cases in {secs:.1} s: {why}\nminimal failing input: {input:#?}")
        }
        Err(TestError::Abort(why)) => panic!("FUZZ {target}: aborted after {cases} cases in {secs:.1} s: {why}"),
    }
}

/// `base` with 1–7 edits: a character inserted, deleted or replaced at a position (the
/// near-misses of a valid document that parsers get wrong).
pub fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    let edits = proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..3, any::<char>()), 1..8);
    edits.prop_map(move |edits| {
        let mut chars: Vec<char> = base.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => {
                    chars.remove(i);
                }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_passing_target_runs_its_cases() {
        let seen = AtomicU64::new(0);
        check("passing", any::<u8>(), |_| {
            seen.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        assert!(seen.load(Ordering::Relaxed) >= u64::from(Config::default().cases.min(256)));
    }

    #[test]
    fn a_panic_fails_with_the_shrunk_input() {
        let caught = std::panic::catch_unwind(|| {
            check("panicking", 0u32..1000, |n| {
                assert!(n < 500, "too big");
                Ok(())
            })
        });
        let message = *caught.expect_err("the target panics").downcast::<String>().unwrap();
        assert!(message.contains("minimal failing input: 500"), "{message}");
    }

    #[test]
    fn a_failed_property_fails_the_check() {
        let caught = std::panic::catch_unwind(|| {
            check("failing", any::<bool>(), |b| {
                prop_assert!(!b);
                Ok(())
            })
        });
        assert!(caught.is_err());
    }
}
