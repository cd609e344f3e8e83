//! Doubling backoff, the one rule of every retry loop that keeps its own state (webhook
//! deliveries, the operator's watches, the gateway's MQTT reconnects and mirror passes):
//! wait `first`, then twice as long each time, never longer than `ceiling`, and start
//! again from `first` after a success.
//!
//! The operator's schedules compute the same curve from a count of failures instead
//! (`operator/src/schedule.rs`), because they keep a count per object, not a loop.

use std::time::Duration;

/// The waits of one retry loop: `first`, `2 × first`, … up to `ceiling`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first` (itself capped at `ceiling`).
    pub fn new(first: Duration, ceiling: Duration) -> Self {
        let first = first.min(ceiling);
        Self { first, ceiling, next: first }
    }

    /// The wait before the next attempt; the one after it is twice as long (at most the
    /// ceiling).
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = wait.saturating_mul(2).min(self.ceiling);
        wait
    }

    /// After a success: the next wait is `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(backoff: &mut Backoff, n: usize) -> Vec<u128> {
        (0..n).map(|_| backoff.wait().as_millis()).collect()
    }

    #[test]
    fn waits_double_to_the_ceiling_and_start_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        assert_eq!(waits(&mut backoff, 6), [500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(waits(&mut backoff, 2), [500, 1000]);
    }

    #[test]
    fn a_ceiling_below_the_first_wait_caps_it_too() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(300));
        assert_eq!(waits(&mut backoff, 3), [300, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.wait(), Duration::from_millis(300));
    }

    #[test]
    fn a_huge_ceiling_saturates_instead_of_overflowing() {
        let mut backoff = Backoff::new(Duration::MAX / 2 + Duration::from_secs(1), Duration::MAX);
        backoff.wait();
        assert_eq!(backoff.wait(), Duration::MAX);
    }
}
