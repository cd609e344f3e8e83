//! Per-object scheduling, generic over the kind: when each object last asked its source
//! (a registry, an upstream, a destination) and what it found, when it may ask again,
//! and how soon a failed reconcile is retried.
//!
//! Registry checks are a per-object requeue at the resource's interval, never a polling
//! loop. Two clocks, kept apart on purpose:
//!
//! - **checks** ([`Schedule::checked`]): after a success the next check is one interval
//!   away; after failures it backs off ([`check_backoff`]: 5 s, 10 s, 20 s… 5 min, never
//!   beyond the interval). A spec change (new generation) makes a check due at once. What
//!   the check found is kept, so a pass that does not ask again (a watch event, or the
//!   retry of a status write that failed) reports the same result without a second
//!   request. A registry notification ([`Schedule::expedite`]) makes a check due at
//!   once, even one that arrives while a check is running (that check may have asked
//!   the registry before the push, so the next pass asks again). A registry that
//!   answers 429 or 5xx with `Retry-After` is not asked again sooner than that
//!   (at most [`oci::MAX_RETRY_AFTER`]), even where the interval is shorter.
//! - **retries** ([`Schedule::failed`]): a reconcile that failed for another reason (the
//!   API server refused a status write or an apply) is retried soon, growing
//!   ([`retry_backoff`]: 1 s, 2 s, 4 s… 30 s), and the count starts again after a
//!   success ([`Schedule::succeeded`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kube::Resource;

use updraft_core::oci;

use crate::error::Error;

/// The scheduling state of every object of kind `K`; `R` is what a successful check
/// found (e.g. the resolved version of a FirmwareChannel).
pub(crate) struct Schedule<K: Resource<DynamicType = ()>, R = ()> {
    entries: Mutex<HashMap<ObjectRef<K>, Entry<R>>>,
}

struct Entry<R> {
    /// The object's uid: a namesake created after a deletion starts afresh.
    uid: Option<String>,
    check: Option<Check<R>>,
    /// Failed reconciles in a row, other than failed checks.
    errors: u32,
    /// Notifications ([`Schedule::expedite`]) received so far.
    nudges: u64,
    /// The notifications a check that became due has taken into account.
    taken: u64,
}

struct Check<R> {
    generation: Option<i64>,
    next: Instant,
    /// Failed checks in a row.
    failures: u32,
    outcome: Result<R, Failure>,
    /// The notifications this check answered; later ones make the next check due.
    seen: u64,
}

/// A failed check, as the object's conditions report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub reason: &'static str,
    pub message: String,
    /// The source could not be reached (rather than answering something unusable).
    pub unreachable: bool,
    /// The release's signature did not verify (what `Verified=False` reports).
    pub unverified: bool,
    /// When `unverified`: the releases tried, each refused (newest first).
    pub skipped: Vec<updraft_core::version::Skipped>,
    /// How long the source asked to be left alone (`Retry-After`), if it did.
    pub retry_after: Option<Duration>,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Self {
            reason: e.reason(),
            message: e.to_string(),
            unreachable: matches!(
                e,
                Error::RegistryUnreachable(_) | Error::RegistryBusy { .. } | Error::UpstreamUnreachable(_)
            ),
            unverified: matches!(e, Error::Unverified { .. }),
            skipped: match e {
                Error::Unverified { skipped, .. } => skipped.clone(),
                _ => Vec::new(),
            },
            retry_after: e.retry_after(),
        }
    }
}

/// Wait before the next check after `failures` failed checks in a row: 5 s, 10 s, 20 s…
/// up to 5 minutes.
pub(crate) fn check_backoff(failures: u32) -> Duration {
    doubling(Duration::from_secs(5), failures, Duration::from_secs(300))
}

/// Wait before retrying after `errors` failed reconciles in a row (a refused status write
/// or apply): 1 s, 2 s, 4 s… up to 30 s.
pub(crate) fn retry_backoff(errors: u32) -> Duration {
    doubling(Duration::from_secs(1), errors, Duration::from_secs(30))
}

/// `first` doubled for every failure after the first, capped at `ceiling`: the curve of
/// `updraft_core::backoff::Backoff`, computed from a count because a schedule keeps a
/// count per object (reset by a success), not a retry loop's state.
fn doubling(first: Duration, failures: u32, ceiling: Duration) -> Duration {
    first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(ceiling)
}

impl<K: Resource<DynamicType = ()>, R> Default for Schedule<K, R> {
    fn default() -> Self {
        Self { entries: Mutex::default() }
    }
}

impl<K: Resource<DynamicType = ()>, R: Clone> Schedule<K, R> {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Entry<R>>> {
        self.entries.lock().expect("schedule lock")
    }

    /// The check of `obj` itself (not of a deleted namesake), if any.
    fn check<'a>(entries: &'a HashMap<ObjectRef<K>, Entry<R>>, obj: &K) -> Option<&'a Check<R>> {
        entries.get(&ObjectRef::from_obj(obj)).filter(|e| e.uid == obj.meta().uid)?.check.as_ref()
    }

    fn fresh(uid: Option<String>) -> Entry<R> {
        Entry { uid, check: None, errors: 0, nudges: 0, taken: 0 }
    }

    /// The entry of `obj`, made afresh for a new object (or a namesake of a deleted one).
    fn entry<'a>(entries: &'a mut HashMap<ObjectRef<K>, Entry<R>>, obj: &K) -> &'a mut Entry<R> {
        let uid = obj.meta().uid.clone();
        let entry = entries.entry(ObjectRef::from_obj(obj)).or_insert_with(|| Self::fresh(uid.clone()));
        if entry.uid != uid {
            *entry = Self::fresh(uid);
        }
        entry
    }

    /// `None` when `obj` should check now: never checked, spec changed since, a
    /// notification came after the last check began, or its interval (or backoff) has
    /// passed. Otherwise how long until it should.
    pub fn due_in(&self, obj: &K) -> Option<Duration> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&ObjectRef::from_obj(obj)).filter(|e| e.uid == obj.meta().uid)?;
        let wait = match &entry.check {
            Some(c) if c.generation == obj.meta().generation && c.seen == entry.nudges => {
                c.next.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
            }
            _ => None,
        };
        if wait.is_none() {
            entry.taken = entry.nudges;
        }
        wait
    }

    /// A notification says `obj`'s source changed: its next pass checks, even if the
    /// check running now began before the change. Returns false for an object never
    /// checked (its first pass checks anyway).
    pub fn expedite(&self, obj: &K) -> bool {
        let mut entries = self.entries();
        match entries.get_mut(&ObjectRef::from_obj(obj)).filter(|e| e.uid == obj.meta().uid) {
            Some(entry) => {
                entry.nudges += 1;
                true
            }
            None => false,
        }
    }

    /// Records a check of `obj` and when the next one is due: after `interval`, or after
    /// a backoff that grows with the failures in a row (never beyond `interval`).
    pub fn checked(&self, obj: &K, outcome: Result<R, Failure>, interval: Duration) {
        let mut entries = self.entries();
        let entry = Self::entry(&mut entries, obj);
        let failures = match &outcome {
            Ok(_) => 0,
            Err(_) => entry.check.as_ref().map_or(0, |c| c.failures) + 1,
        };
        let wait = match &outcome {
            Ok(_) => interval,
            // The backoff, or longer if the registry asked (up to a ceiling).
            Err(failure) => {
                let backoff = check_backoff(failures).min(interval);
                failure.retry_after.map_or(backoff, |asked| backoff.max(asked.min(oci::MAX_RETRY_AFTER)))
            }
        };
        let (next, seen) = (Instant::now() + wait, entry.taken);
        entry.check = Some(Check { generation: obj.meta().generation, next, failures, outcome, seen });
    }

    /// What the last check of `obj` found, if it succeeded for the current generation.
    pub fn last_result(&self, obj: &K) -> Option<R> {
        let entries = self.entries();
        let check = Self::check(&entries, obj)?;
        (check.generation == obj.meta().generation).then(|| check.outcome.as_ref().ok().cloned()).flatten()
    }

    /// How the last check of `obj` failed, if it did (until a check succeeds).
    pub fn last_failure(&self, obj: &K) -> Option<Failure> {
        Self::check(&self.entries(), obj)?.outcome.as_ref().err().cloned()
    }

    /// Counts a failed reconcile of `obj` (not a failed check) and returns how long to
    /// wait before retrying it.
    pub fn failed(&self, obj: &K) -> Duration {
        let mut entries = self.entries();
        let entry = Self::entry(&mut entries, obj);
        entry.errors = entry.errors.saturating_add(1);
        retry_backoff(entry.errors)
    }

    /// A reconcile of `obj` succeeded: the next failure is retried after the shortest wait.
    pub fn succeeded(&self, obj: &K) {
        Self::entry(&mut self.entries(), obj).errors = 0;
    }

    /// Forgets `obj` (its spec became invalid, or it was deleted): the next valid spec
    /// checks at once.
    pub fn forget(&self, obj: &K) {
        self.entries().remove(&ObjectRef::from_obj(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_crds::{ImageStream, ImageStreamSpec};

    fn obj(generation: i64) -> ImageStream {
        let mut s = ImageStream::new("s", ImageStreamSpec::default());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("uid-1".into());
        s.metadata.generation = Some(generation);
        s
    }

    fn failure() -> Failure {
        Failure::from(&Error::RegistryUnreachable("down".into()))
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn backoffs_grow_to_their_ceilings() {
        let checks: Vec<u64> = (1..=9).map(|f| check_backoff(f).as_secs()).collect();
        assert_eq!(checks, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        let retries: Vec<u64> = (1..=7).map(|e| retry_backoff(e).as_secs()).collect();
        assert_eq!(retries, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_new_object_is_due_then_waits_its_interval() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        assert_eq!(schedule.due_in(&obj(1)), None);
        schedule.checked(&obj(1), Ok(7), HOUR);
        let wait = schedule.due_in(&obj(1)).expect("not due right after a check");
        assert!(wait > HOUR - Duration::from_secs(5) && wait <= HOUR, "{wait:?}");
        assert_eq!(schedule.last_result(&obj(1)), Some(7));
        assert_eq!(schedule.last_failure(&obj(1)), None);
    }

    #[test]
    fn failed_checks_back_off_growing_but_never_beyond_the_interval() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        let mut waits = Vec::new();
        for _ in 0..4 {
            schedule.checked(&obj(1), Err(failure()), HOUR);
            waits.push(schedule.due_in(&obj(1)).unwrap().as_secs_f64().round() as u64);
        }
        assert_eq!(waits, [5, 10, 20, 40]);
        assert_eq!(schedule.last_failure(&obj(1)), Some(failure()));
        assert_eq!(schedule.last_result(&obj(1)), None);

        schedule.checked(&obj(1), Err(failure()), Duration::from_secs(2));
        assert!(schedule.due_in(&obj(1)).unwrap() <= Duration::from_secs(2), "capped at the interval");
    }

    #[test]
    fn a_registry_asking_to_wait_is_not_asked_sooner_even_past_the_interval() {
        let busy = |secs| {
            let message = "429".to_owned();
            Failure::from(&Error::RegistryBusy { message, retry_after: Duration::from_secs(secs) })
        };
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        let wait = |f: Failure, interval: Duration| {
            schedule.checked(&obj(1), Err(f), interval);
            schedule.due_in(&obj(1)).unwrap().as_secs_f64().round() as u64
        };
        // Longer than the backoff (5 s) and than the 60 s interval: honoured.
        assert_eq!(wait(busy(120), Duration::from_secs(60)), 120);
        // Shorter than the backoff (now 10 s): the backoff.
        assert_eq!(wait(busy(1), HOUR), 10);
        // An hour asked: the ceiling.
        assert_eq!(wait(busy(3600), HOUR), oci::MAX_RETRY_AFTER.as_secs());
        assert!(busy(1).unreachable, "reported as an unreachable registry");
        assert_eq!(failure().retry_after, None);
    }

    #[test]
    fn success_resets_the_backoff_and_the_failure() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        for _ in 0..3 {
            schedule.checked(&obj(1), Err(failure()), HOUR);
        }
        schedule.checked(&obj(1), Ok(1), HOUR);
        assert_eq!(schedule.last_failure(&obj(1)), None);
        schedule.checked(&obj(1), Err(failure()), HOUR);
        assert_eq!(schedule.due_in(&obj(1)).unwrap().as_secs_f64().round() as u64, 5, "back to the first step");
    }

    #[test]
    fn a_new_generation_is_due_at_once_and_hides_the_old_result() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        schedule.checked(&obj(1), Ok(7), HOUR);
        assert_eq!(schedule.due_in(&obj(2)), None);
        assert_eq!(schedule.last_result(&obj(2)), None, "a result for another spec is not reused");
        schedule.forget(&obj(1));
        assert_eq!(schedule.due_in(&obj(1)), None);
    }

    #[test]
    fn failed_reconciles_retry_soon_growing_and_reset_on_success() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        schedule.checked(&obj(1), Ok(7), HOUR);
        let retries: Vec<u64> = (0..4).map(|_| schedule.failed(&obj(1)).as_secs()).collect();
        assert_eq!(retries, [1, 2, 4, 8]);
        // Retries do not move the check: its result stays fresh for the retry to reuse.
        assert!(schedule.due_in(&obj(1)).unwrap() > HOUR - Duration::from_secs(5));
        assert_eq!(schedule.last_result(&obj(1)), Some(7));
        schedule.succeeded(&obj(1));
        assert_eq!(schedule.failed(&obj(1)), Duration::from_secs(1));
    }

    #[test]
    fn a_notification_makes_a_check_due_at_once() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        assert!(!schedule.expedite(&obj(1)), "never checked: due anyway");
        assert_eq!(schedule.due_in(&obj(1)), None);
        schedule.checked(&obj(1), Ok(7), HOUR);
        assert!(schedule.due_in(&obj(1)).is_some());
        assert!(schedule.expedite(&obj(1)));
        assert!(schedule.expedite(&obj(1)));
        assert_eq!(schedule.due_in(&obj(1)), None, "due at once");
        assert_eq!(schedule.last_result(&obj(1)), Some(7), "the last result stays until the check");
        schedule.checked(&obj(1), Ok(8), HOUR);
        assert!(schedule.due_in(&obj(1)).is_some(), "many notifications, one check");
    }

    #[test]
    fn a_notification_during_a_check_makes_the_next_pass_check_again() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        schedule.checked(&obj(1), Ok(7), HOUR);
        schedule.expedite(&obj(1));
        assert_eq!(schedule.due_in(&obj(1)), None, "the pass checks");
        schedule.expedite(&obj(1)); // a push while the registry is being asked
        schedule.checked(&obj(1), Ok(7), HOUR);
        assert_eq!(schedule.due_in(&obj(1)), None, "the check may predate the push: ask again");
        schedule.checked(&obj(1), Ok(8), HOUR);
        assert!(schedule.due_in(&obj(1)).is_some());
    }

    #[test]
    fn objects_are_kept_apart_by_namespace_and_name() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        schedule.checked(&obj(1), Ok(7), HOUR);
        let mut other = obj(1);
        other.metadata.namespace = Some("elsewhere".into());
        assert_eq!(schedule.due_in(&other), None);
        assert_eq!(schedule.last_result(&other), None);
    }

    #[test]
    fn a_namesake_created_after_a_deletion_starts_afresh() {
        let schedule: Schedule<ImageStream, u32> = Schedule::default();
        schedule.checked(&obj(1), Ok(7), HOUR);
        schedule.failed(&obj(1));
        let mut namesake = obj(1);
        namesake.metadata.uid = Some("uid-2".into());
        assert_eq!(schedule.due_in(&namesake), None, "a new object checks at once");
        assert_eq!(schedule.last_result(&namesake), None, "another object's result is not reused");
        assert_eq!(schedule.failed(&namesake), Duration::from_secs(1));
        assert_eq!(schedule.due_in(&obj(1)), None, "the entry now belongs to the namesake");
    }
}
