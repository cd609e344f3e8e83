//! kstatus conditions (`Ready`, `Reconciling`, `Stalled`) and the helper that sets them
//! without write churn.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The resource serves what its spec asks for.
pub const READY: &str = "Ready";
/// The controller is working towards the spec (e.g. a first resolution).
pub const RECONCILING: &str = "Reconciling";
/// The controller cannot make progress until the spec changes.
pub const STALLED: &str = "Stalled";

/// `"True"` or `"False"`.
fn status_str(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// A condition about to be set, without a timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> NewCondition<'a> {
    /// An empty `message` becomes the reason: API servers before 1.22 turn an empty
    /// string in a server-side-apply patch into `null`, which the schema rejects.
    pub fn new(type_: &'a str, status: bool, reason: &'a str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.is_empty() { reason.to_owned() } else { message };
        Self { type_, status, reason, message }
    }
}

/// Sets `new` in `conditions` for `generation`. Returns whether anything changed.
///
/// A condition whose status, reason, message and observed generation are unchanged is
/// left alone, timestamp included; `lastTransitionTime` moves only when the status flips.
pub fn set_condition(conditions: &mut Vec<Condition>, new: NewCondition<'_>, generation: Option<i64>) -> bool {
    set_condition_at(conditions, new, generation, now().0)
}

/// The current time at the precision the API server stores (whole seconds), so a value
/// read back compares equal to the value written.
pub fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).expect("now is a valid timestamp"))
}

/// [`set_condition`] with an explicit clock, for tests.
fn set_condition_at(
    conditions: &mut Vec<Condition>,
    new: NewCondition<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = status_str(new.status);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c)
            if c.status == status
                && c.reason == new.reason
                && c.message == new.message
                && c.observed_generation == generation =>
        {
            false
        }
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.to_owned();
            c.reason = new.reason.to_owned();
            c.message = new.message;
            c.observed_generation = generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: new.type_.to_owned(),
                status: status.to_owned(),
                reason: new.reason.to_owned(),
                message: new.message,
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Whether the condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn adds_then_leaves_an_unchanged_condition_alone() {
        let mut cs = Vec::new();
        assert!(set_condition_at(&mut cs, NewCondition::new(READY, true, "Resolved", "v1"), Some(1), at(10)));
        assert!(!set_condition_at(&mut cs, NewCondition::new(READY, true, "Resolved", "v1"), Some(1), at(20)));
        assert_eq!(cs[0].last_transition_time, Time(at(10)));
    }

    #[test]
    fn message_change_keeps_transition_time_status_flip_moves_it() {
        let mut cs = Vec::new();
        set_condition_at(&mut cs, NewCondition::new(READY, true, "Resolved", "v1"), Some(1), at(10));
        assert!(set_condition_at(&mut cs, NewCondition::new(READY, true, "Resolved", "v2"), Some(1), at(20)));
        assert_eq!(cs[0].last_transition_time, Time(at(10)));
        assert!(set_condition_at(&mut cs, NewCondition::new(READY, false, "Failed", "x"), Some(1), at(30)));
        assert_eq!(cs[0].last_transition_time, Time(at(30)));
        assert_eq!(cs[0].status, "False");
        assert!(!is_true(&cs, READY));
    }

    #[test]
    fn empty_message_becomes_the_reason() {
        assert_eq!(NewCondition::new(STALLED, false, "SpecValid", "").message, "SpecValid");
    }

    #[test]
    fn new_generation_is_a_change() {
        let mut cs = Vec::new();
        set_condition_at(&mut cs, NewCondition::new(STALLED, false, "Valid", ""), Some(1), at(10));
        assert!(set_condition_at(&mut cs, NewCondition::new(STALLED, false, "Valid", ""), Some(2), at(20)));
        assert_eq!(find(&cs, STALLED).unwrap().observed_generation, Some(2));
    }
}
