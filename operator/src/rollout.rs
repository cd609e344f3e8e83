//! Staged rollout of a channel's `latest`: the share of devices that get it, and the
//! steps the operator takes by itself ([`assess`]).
//!
//! With `spec.rollout.percentage` (or nothing) the share is fixed: that percentage,
//! default 100. With `spec.rollout.steps` (e.g. `[5, 25, 50, 100]`) the share rises
//! while the devices that downloaded the new version report running it. The rules,
//! each a test below:
//!
//! - **A new `latest`** (not `status.rollout.version`) starts at step 1 (`steps[0]`)
//!   with `stepStarted` = now. Two exceptions go to 100 at once and are complete: a
//!   first release (no `previous`: there is nothing older to keep serving), and a
//!   `latest` lower than the version being rolled out or than `previous` (a pin back
//!   or a rollback: the devices must leave the bad version, not a sample of them).
//! - **At a step, before `dwell`**: wait; the figures so far are shown.
//! - **After `dwell`**, the census figures over [`stepStarted`, now]: when at least
//!   `minDevices` downloaded the version and at least `successThreshold` percent of
//!   them report running it, the next step starts (`stepStarted` = now); the last
//!   step (100) passing completes the rollout, which stays at 100.
//! - **Otherwise, once `timeout` has passed since the step began**: the rollout
//!   **pauses** at its step, because too few run it (`BelowThreshold`), too few
//!   downloaded it (`TooFewDevices`), or the gateway's census is missing (`NoFigures`).
//!   The share stays at the step's.
//! - **A pause is sticky for the generation it was decided at**: figures that wobble
//!   around the threshold afterwards change nothing (no flapping, no status churn: the
//!   figures of the decision stay in status). An edit of the spec (a new generation)
//!   judges the same step again under the new spec, over the same figures (since the
//!   step began, `stepStarted` unchanged): a lower `successThreshold` or `minDevices`
//!   the figures meet advances at once; a longer `timeout` resumes the wait; an edit
//!   that changes nothing for the step leaves it paused (no new event). A new `latest`
//!   starts again at step 1. Resuming or rolling back is an edit in Git, like any other.
//!
//!   Why not a fresh step (`stepStarted` = now) on resume: the devices inside the share
//!   downloaded the version during the step already, and the share does not change on
//!   resume, so a fresh window would see almost no downloads and pause again
//!   (`TooFewDevices`) however low the threshold was set.
//! - **Steps added to a channel whose version was already out** at a fixed percentage
//!   continue at the first step at least as high (the share never drops on its own).
//!
//! [`assess`] is pure: the reconcile gives it the spec, the old status, `now` and the
//! census figures since the step began ([`figures_since`]) and publishes what it
//! returns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use updraft_crds::channel::{Rollout, RolloutStatus};
use updraft_crds::FirmwareChannel;

use crate::census::Adoption;
use crate::error::SpecError;

/// Each step lasts at least this long without `spec.rollout.dwell`.
const DEFAULT_DWELL: Duration = Duration::from_secs(3600);
/// A step waits at most this long for its devices without `spec.rollout.timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_THRESHOLD: i32 = 95;
const DEFAULT_MIN_DEVICES: i64 = 10;

/// The share of devices (0-100) that get `status.latest`: the fixed
/// `spec.rollout.percentage` (default 100), or with `spec.rollout.steps` the step
/// `status.rollout` reached for that version (the first step for a version it has not
/// seen yet).
pub(crate) fn share(channel: &FirmwareChannel) -> u8 {
    let spec = &channel.spec.rollout;
    let status = channel.status.as_ref();
    let percentage = match spec.steps.first() {
        None => spec.percentage.unwrap_or(100),
        Some(&first) => {
            let latest = status.and_then(|s| s.latest.as_ref()).map(|l| l.version.as_str());
            match status.and_then(|s| s.rollout.as_ref()) {
                Some(rollout) if Some(rollout.version.as_str()) == latest => rollout.percentage,
                _ => first,
            }
        }
    };
    percentage.clamp(0, 100) as u8
}

/// `spec.rollout.steps` with their settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Steps {
    pub shares: Vec<i32>,
    pub dwell: Duration,
    pub timeout: Duration,
    /// Percent of the devices that downloaded the version that must run it.
    pub threshold: i32,
    pub min_devices: i64,
}

/// The steps of `spec` (None with a fixed percentage), or the field at fault: steps
/// rising, each 1-100, the last 100; not with `percentage`; `dwell` and `timeout`
/// durations, `timeout` at least `dwell`; `successThreshold` 1-100; `minDevices` at
/// least 1. The API server checks some of these too (the schema's ranges); the rest
/// only the operator can (kube-apiserver 1.20 has no CEL).
pub(crate) fn steps(spec: &Rollout) -> Result<Option<Steps>, SpecError> {
    if let Some(p) = spec.percentage {
        if !(0..=100).contains(&p) {
            return Err(SpecError::new("rollout.percentage", format!("rollout.percentage {p} is not 0-100")));
        }
    }
    if spec.steps.is_empty() {
        return Ok(None);
    }
    if spec.percentage.is_some() {
        let message = "rollout.percentage and rollout.steps are both set; a fixed share or steps, not both";
        return Err(SpecError::new("rollout.steps", message));
    }
    let shares = &spec.steps;
    if let Some(bad) = shares.iter().find(|s| !(1..=100).contains(*s)) {
        return Err(SpecError::new("rollout.steps", format!("rollout.steps {shares:?}: {bad} is not 1-100")));
    }
    if shares.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SpecError::new("rollout.steps", format!("rollout.steps {shares:?} must rise")));
    }
    if shares.last() != Some(&100) {
        return Err(SpecError::new("rollout.steps", format!("rollout.steps {shares:?} must end at 100")));
    }
    let duration = |field: &str, value: &Option<String>, default| match value {
        None => Ok(default),
        Some(v) => crate::checks::duration(field, v),
    };
    let dwell = duration("rollout.dwell", &spec.dwell, DEFAULT_DWELL)?;
    let timeout = duration("rollout.timeout", &spec.timeout, DEFAULT_TIMEOUT)?;
    if timeout < dwell {
        let message = format!("rollout.timeout ({timeout:?}) is shorter than rollout.dwell ({dwell:?})");
        return Err(SpecError::new("rollout.timeout", message));
    }
    let threshold = spec.success_threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(1..=100).contains(&threshold) {
        let message = format!("rollout.successThreshold {threshold} is not 1-100");
        return Err(SpecError::new("rollout.successThreshold", message));
    }
    let min_devices = spec.min_devices.unwrap_or(DEFAULT_MIN_DEVICES);
    if min_devices < 1 {
        let message = format!("rollout.minDevices {min_devices} must be at least 1");
        return Err(SpecError::new("rollout.minDevices", message));
    }
    Ok(Some(Steps { shares: shares.clone(), dwell, timeout, threshold, min_devices }))
}

/// Why a rollout paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// Enough devices downloaded the version, too few of them run it.
    BelowThreshold,
    /// Fewer than `minDevices` downloaded it during the step.
    TooFewDevices,
    /// The gateway's census gave no figures.
    NoFigures,
}

impl PauseReason {
    /// The condition reason and webhook `reason`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BelowThreshold => "BelowThreshold",
            Self::TooFewDevices => "TooFewDevices",
            Self::NoFigures => "NoFigures",
        }
    }
}

/// What [`assess`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Happened {
    /// No steps (a fixed share), or nothing resolved yet.
    Fixed,
    /// A new version started at step 1.
    Started,
    /// The step passed; the next one started. Shares, in percent.
    Advanced { from: i32, to: i32 },
    /// The step timed out: the rollout stops here.
    Paused { reason: PauseReason, figures: Option<Adoption> },
    /// A spec edit resumed a paused rollout at its step (it waits again, until the
    /// edited timeout).
    Resumed,
    /// The last step passed, or the version went to 100 at once (see [`Completion`]).
    Completed(Completion),
    /// At a step: too early to judge, or not judged good yet and not timed out.
    Waiting,
    /// Still paused (the same generation): nothing changes.
    StillPaused,
    /// Complete before: nothing to do.
    StillComplete,
}

/// How a rollout completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The last step passed.
    LastStep,
    /// A first release: nothing older to serve.
    FirstRelease,
    /// A version lower than the one before (a pin back, a rollback).
    Rollback,
}

impl Happened {
    /// The transitions that deserve an event.
    pub(crate) fn is_transition(&self) -> bool {
        !matches!(self, Self::Fixed | Self::Waiting | Self::StillPaused | Self::StillComplete)
    }
}

/// What [`assess`] reads.
#[derive(Clone, Debug)]
pub(crate) struct Seen<'a> {
    /// The checked steps ([`steps`]); None for a fixed share.
    pub steps: Option<&'a Steps>,
    /// `spec.rollout.percentage`.
    pub percentage: Option<i32>,
    /// `status.rollout` before this pass.
    pub old: Option<&'a RolloutStatus>,
    /// `status.latest.version` and `status.previous.version` after this pass's resolution.
    pub latest: Option<&'a str>,
    pub previous: Option<&'a str>,
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// The census since the old step began ([`figures_since`]); None when there are none.
    pub figures: Option<Adoption>,
}

/// When the census figures [`assess`] needs start: the old step's start, when the
/// step is still that of `latest`.
pub(crate) fn figures_since(old: Option<&RolloutStatus>, latest: Option<&str>) -> Option<SystemTime> {
    let old = old.filter(|o| Some(o.version.as_str()) == latest && o.step.is_some())?;
    let started = old.step_started.as_ref()?.0.as_second();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(started).ok()?))
}

/// The new `status.rollout` and what happened (see the module doc for the rules).
pub(crate) fn assess(seen: &Seen<'_>) -> (Option<RolloutStatus>, Happened) {
    let Some(latest) = seen.latest else { return (None, Happened::Fixed) };
    let Some(steps) = seen.steps else {
        let fixed = RolloutStatus {
            version: latest.to_owned(),
            percentage: seen.percentage.unwrap_or(100),
            ..Default::default()
        };
        return (Some(fixed), Happened::Fixed);
    };
    let now = Time(seen.now);
    let last = steps.shares.len();
    let at_step = |step: usize, complete: bool| RolloutStatus {
        version: latest.to_owned(),
        percentage: steps.shares[step - 1],
        step: Some(step.try_into().unwrap_or(i32::MAX)),
        step_started: Some(now.clone()),
        complete,
        ..Default::default()
    };
    let old = match seen.old {
        Some(old) if old.version == latest => old,
        old => {
            let lower = |than: Option<&str>| than.is_some_and(|t| is_lower(latest, t));
            return if seen.previous.is_none() {
                (Some(at_step(last, true)), Happened::Completed(Completion::FirstRelease))
            } else if lower(old.map(|o| o.version.as_str())) || lower(seen.previous) {
                (Some(at_step(last, true)), Happened::Completed(Completion::Rollback))
            } else {
                (Some(at_step(1, false)), Happened::Started)
            };
        }
    };
    let Some(step) = old.step.and_then(|s| usize::try_from(s).ok()).filter(|s| *s >= 1) else {
        // Out at a fixed share before: continue at the first step as high.
        let step = steps.shares.iter().position(|s| *s >= old.percentage).map_or(last, |i| i + 1);
        return (Some(at_step(step, step == last && old.percentage >= 100)), Happened::Waiting);
    };
    let step = step.min(last);
    let mut status = RolloutStatus { percentage: steps.shares[step - 1], step: Some(step as i32), ..old.clone() };
    if old.complete {
        return (Some(status), Happened::StillComplete);
    }
    let resumed = old.paused;
    if resumed {
        if old.paused_generation == seen.generation {
            return (Some(status), Happened::StillPaused);
        }
        (status.paused, status.paused_generation) = (false, None);
    }
    let waiting = if resumed { Happened::Resumed } else { Happened::Waiting };
    let started = old.step_started.clone().unwrap_or_else(|| now.clone());
    status.step_started = Some(started.clone());
    let elapsed = seen.now.as_second().saturating_sub(started.0.as_second());
    let elapsed = Duration::from_secs(u64::try_from(elapsed).unwrap_or(0));
    show(&mut status, seen.figures);
    if elapsed < steps.dwell {
        return (Some(status), waiting);
    }
    let passed = seen.figures.is_some_and(|f| {
        f.downloaded >= steps.min_devices.unsigned_abs()
            && u128::from(f.running) * 100 >= u128::from(steps.threshold.unsigned_abs()) * u128::from(f.downloaded)
    });
    if passed {
        if step == last {
            status.complete = true;
            return (Some(status), Happened::Completed(Completion::LastStep));
        }
        let (from, next) = (status.percentage, at_step(step + 1, false));
        let to = next.percentage;
        return (Some(next), Happened::Advanced { from, to });
    }
    if elapsed < steps.timeout {
        return (Some(status), waiting);
    }
    let reason = match seen.figures {
        None => PauseReason::NoFigures,
        Some(f) if f.downloaded < steps.min_devices.unsigned_abs() => PauseReason::TooFewDevices,
        Some(_) => PauseReason::BelowThreshold,
    };
    status.paused = true;
    status.paused_generation = seen.generation;
    if resumed {
        // Judged again under an edited spec, still not passing: the pause stands.
        return (Some(status), Happened::StillPaused);
    }
    (Some(status), Happened::Paused { reason, figures: seen.figures })
}

/// The census figures in status: devices that downloaded and run the version, and the
/// adoption percentage (at most 100: the figures are estimates).
fn show(status: &mut RolloutStatus, figures: Option<Adoption>) {
    let Some(f) = figures else {
        (status.downloaded, status.running, status.adoption) = (None, None, None);
        return;
    };
    status.downloaded = Some(i64::try_from(f.downloaded).unwrap_or(i64::MAX));
    status.running = Some(i64::try_from(f.running).unwrap_or(i64::MAX));
    status.adoption = adoption(f);
}

/// `running` as a percentage of `downloaded`, at most 100; none without downloads.
fn adoption(f: Adoption) -> Option<i32> {
    (f.downloaded > 0).then(|| (u128::from(f.running) * 100 / u128::from(f.downloaded)).min(100) as i32)
}

/// `version` is semver-lower than `than` (versions that are not semver are never lower).
fn is_lower(version: &str, than: &str) -> bool {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    matches!((parse(version), parse(than)), (Some(v), Some(t)) if v < t)
}

/// How long until the rollout must be looked at again: the end of the step's dwell,
/// then its timeout; None when nothing will happen by itself (a fixed share, paused,
/// complete). After the dwell the figures can pass at any moment: the caller caps the
/// wait (the census interval, a minute).
pub(crate) fn next_look(status: Option<&RolloutStatus>, steps: Option<&Steps>, now: Timestamp) -> Option<Duration> {
    let (status, steps) = (status?, steps?);
    if status.paused || status.complete {
        return None;
    }
    let started = status.step_started.as_ref()?.0.as_second();
    let elapsed = Duration::from_secs(u64::try_from(now.as_second().saturating_sub(started)).unwrap_or(0));
    let until = if elapsed < steps.dwell { steps.dwell } else { steps.timeout };
    Some(until.saturating_sub(elapsed).max(Duration::from_secs(1)))
}

/// Step `n` of the steps, e.g. `step 2 (25 %)`.
fn step_name(status: &RolloutStatus) -> String {
    match status.step {
        Some(step) => format!("step {step} ({} %)", status.percentage),
        None => format!("{} %", status.percentage),
    }
}

/// `HH:MM UTC` of the step's start.
fn since(status: &RolloutStatus) -> String {
    status.step_started.as_ref().map_or_else(|| "the step began".to_owned(), |t| t.0.strftime("%H:%M UTC").to_string())
}

/// The `RolloutPaused` condition's message while paused: the figures that decided it,
/// e.g. `paused at step 2 (25 %): 7 of 10 devices that downloaded 1.1.0 since 12:00
/// UTC run it (70 % < 95 %)`.
pub(crate) fn paused_message(status: &RolloutStatus, reason: PauseReason, steps: &Steps, gateway: &str) -> String {
    let (at, version, since) = (step_name(status), &status.version, since(status));
    let (downloaded, running) = (status.downloaded.unwrap_or(0), status.running.unwrap_or(0));
    match reason {
        PauseReason::BelowThreshold => format!(
            "paused at {at}: {running} of {downloaded} devices that downloaded {version} since {since} run it \
             ({} % < {} %)",
            status.adoption.unwrap_or(0),
            steps.threshold
        ),
        PauseReason::TooFewDevices => format!(
            "paused at {at}: {downloaded} devices downloaded {version} since {since}, fewer than minDevices {} \
             ({running} run it)",
            steps.min_devices
        ),
        PauseReason::NoFigures => format!(
            "paused at {at}: no device census from gateway {gateway:?} since {since}, so no figures for {version}"
        ),
    }
}

/// The pause reason a paused status shows (its figures against the steps).
pub(crate) fn pause_reason(status: &RolloutStatus, steps: &Steps) -> PauseReason {
    match status.downloaded {
        None => PauseReason::NoFigures,
        Some(d) if d < steps.min_devices => PauseReason::TooFewDevices,
        Some(_) => PauseReason::BelowThreshold,
    }
}

/// The `RolloutPaused=False` message while progressing or complete, without the live
/// figures (those are in `status.rollout`; a condition that moved with every census
/// would be written on every pass).
pub(crate) fn progress_message(status: &RolloutStatus, steps: &Steps) -> String {
    let version = &status.version;
    if status.complete {
        return format!("{version} reaches every device");
    }
    format!("{version} at {} of {} since {}", step_name(status), steps.shares.len(), since(status))
}

/// The note of the event of a transition.
pub(crate) fn describe(happened: &Happened, status: &RolloutStatus, steps: &Steps, gateway: &str) -> String {
    let version = &status.version;
    let figures = match (status.running, status.downloaded) {
        (Some(r), Some(d)) => format!(": {r} of {d} devices that downloaded it run it"),
        _ => String::new(),
    };
    match happened {
        Happened::Started => format!("{version} starts at {}", step_name(status)),
        Happened::Advanced { from, .. } => {
            format!("{version} advances from {from} % to {}: the step before passed", step_name(status))
        }
        Happened::Paused { reason, .. } => paused_message(status, *reason, steps, gateway),
        Happened::Resumed => format!("{version} resumes at {} after a spec change", step_name(status)),
        Happened::Completed(Completion::LastStep) => format!("{version} reaches every device{figures}"),
        Happened::Completed(Completion::FirstRelease) => {
            format!("{version} is the channel's first release: every device gets it at once")
        }
        Happened::Completed(Completion::Rollback) => {
            format!("{version} is lower than the version before (a pin back): every device gets it at once")
        }
        Happened::Fixed | Happened::Waiting | Happened::StillPaused | Happened::StillComplete => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn plan() -> Steps {
        steps(&Rollout {
            steps: vec![5, 25, 50, 100],
            dwell: Some("10m".into()),
            timeout: Some("1h".into()),
            success_threshold: Some(90),
            min_devices: Some(10),
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).unwrap()
    }

    fn figures(downloaded: u64, running: u64) -> Option<Adoption> {
        Some(Adoption { downloaded, running })
    }

    /// One pass over `old` at `secs` after T0, generation `generation`.
    fn pass(
        steps: &Steps,
        old: Option<&RolloutStatus>,
        generation: i64,
        secs: i64,
        figures: Option<Adoption>,
    ) -> (RolloutStatus, Happened) {
        let seen = Seen {
            steps: Some(steps),
            percentage: None,
            old,
            latest: Some("1.1.0"),
            previous: Some("1.0.0"),
            generation: Some(generation),
            now: at(secs),
            figures,
        };
        let (status, happened) = assess(&seen);
        (status.unwrap(), happened)
    }

    fn started(steps: &Steps) -> RolloutStatus {
        let (status, happened) = pass(steps, None, 1, 0, None);
        assert_eq!(happened, Happened::Started);
        status
    }

    #[test]
    fn without_steps_the_share_is_fixed() {
        let seen = |percentage| Seen {
            steps: None,
            percentage,
            old: None,
            latest: Some("1.1.0"),
            previous: Some("1.0.0"),
            generation: Some(1),
            now: at(0),
            figures: figures(10, 1),
        };
        let (status, happened) = assess(&seen(None));
        assert_eq!(happened, Happened::Fixed);
        assert_eq!(status.unwrap(), RolloutStatus { version: "1.1.0".into(), percentage: 100, ..Default::default() });
        assert_eq!(assess(&seen(Some(30))).0.unwrap().percentage, 30);
        assert_eq!(assess(&Seen { latest: None, ..seen(Some(30)) }), (None, Happened::Fixed));
    }

    #[test]
    fn a_new_version_starts_at_the_first_step() {
        let status = started(&plan());
        assert_eq!((status.step, status.percentage), (Some(1), 5));
        assert_eq!(status.step_started, Some(Time(at(0))));
        assert!(!status.paused && !status.complete);
        assert_eq!(status.downloaded, None);
    }

    #[test]
    fn a_first_release_and_a_pin_back_go_to_100_at_once() {
        let steps = plan();
        let first = Seen {
            steps: Some(&steps),
            percentage: None,
            old: None,
            latest: Some("1.0.0"),
            previous: None,
            generation: Some(1),
            now: at(0),
            figures: None,
        };
        let (status, happened) = assess(&first);
        assert_eq!(happened, Happened::Completed(Completion::FirstRelease));
        let status = status.unwrap();
        assert_eq!((status.step, status.percentage, status.complete), (Some(4), 100, true));

        // 1.1.0 was at step 2; the channel is pinned back to 1.0.0 (1.1.0 becomes previous).
        let (at_step_2, _) = pass(&steps, Some(&started(&steps)), 1, 600, figures(10, 10));
        let pin_back = Seen { latest: Some("1.0.0"), previous: Some("1.1.0"), old: Some(&at_step_2), ..first };
        let (status, happened) = assess(&pin_back);
        assert_eq!(happened, Happened::Completed(Completion::Rollback));
        let status = status.unwrap();
        assert_eq!((status.version.as_str(), status.percentage, status.complete), ("1.0.0", 100, true));
        // A higher version after it rolls out in steps again.
        let (status, happened) =
            assess(&Seen { latest: Some("1.2.0"), previous: Some("1.0.0"), old: Some(&status), ..pin_back.clone() });
        assert_eq!((happened, status.unwrap().percentage), (Happened::Started, 5));
    }

    #[test]
    fn before_the_dwell_it_waits_and_shows_the_figures() {
        let steps = plan();
        let (status, happened) = pass(&steps, Some(&started(&steps)), 1, 599, figures(20, 20));
        assert_eq!(happened, Happened::Waiting);
        assert_eq!((status.step, status.percentage), (Some(1), 5));
        assert_eq!((status.downloaded, status.running, status.adoption), (Some(20), Some(20), Some(100)));
        assert_eq!(next_look(Some(&status), Some(&steps), at(599)), Some(Duration::from_secs(1)));
        assert_eq!(next_look(Some(&status), Some(&steps), at(0)), Some(Duration::from_secs(600)));
    }

    #[test]
    fn after_the_dwell_enough_running_devices_advance_step_by_step_to_complete() {
        let steps = plan();
        let mut status = started(&steps);
        let mut t = 0;
        for (from, to) in [(5, 25), (25, 50), (50, 100)] {
            t += 600;
            let (next, happened) = pass(&steps, Some(&status), 1, t, figures(10, 9));
            assert_eq!(happened, Happened::Advanced { from, to });
            assert_eq!((next.percentage, next.step_started.clone()), (to, Some(Time(at(t)))));
            assert_eq!(next.downloaded, None, "a new step's figures start from nothing");
            status = next;
        }
        t += 600;
        let (done, happened) = pass(&steps, Some(&status), 1, t, figures(100, 95));
        assert_eq!(happened, Happened::Completed(Completion::LastStep));
        assert!(done.complete && !done.paused);
        assert_eq!((done.step, done.percentage, done.adoption), (Some(4), 100, Some(95)));
        assert_eq!(next_look(Some(&done), Some(&steps), at(t)), None);
        // Complete stays complete, whatever the figures say later.
        let (again, happened) = pass(&steps, Some(&done), 2, t + 7200, figures(100, 1));
        assert_eq!((happened, again), (Happened::StillComplete, done));
    }

    #[test]
    fn too_few_running_devices_wait_until_the_timeout_then_pause() {
        let steps = plan();
        let status = started(&steps);
        let (waiting, happened) = pass(&steps, Some(&status), 1, 3599, figures(10, 8));
        assert_eq!(happened, Happened::Waiting);
        assert_eq!(next_look(Some(&waiting), Some(&steps), at(3599)), Some(Duration::from_secs(1)));
        let (paused, happened) = pass(&steps, Some(&waiting), 1, 3600, figures(10, 8));
        assert_eq!(happened, Happened::Paused { reason: PauseReason::BelowThreshold, figures: figures(10, 8) });
        assert!(paused.paused);
        assert_eq!((paused.step, paused.percentage, paused.paused_generation), (Some(1), 5, Some(1)));
        assert_eq!((paused.downloaded, paused.running, paused.adoption), (Some(10), Some(8), Some(80)));
        assert_eq!(next_look(Some(&paused), Some(&steps), at(3600)), None);
        assert_eq!(
            paused_message(&paused, PauseReason::BelowThreshold, &steps, "default"),
            "paused at step 1 (5 %): 8 of 10 devices that downloaded 1.1.0 since 08:00 UTC run it (80 % < 90 %)"
        );
    }

    #[test]
    fn the_pause_says_why() {
        let steps = plan();
        let status = started(&steps);
        let reason = |figures| match pass(&steps, Some(&status), 1, 3600, figures).1 {
            Happened::Paused { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(figures(9, 9)), PauseReason::TooFewDevices);
        assert_eq!(reason(None), PauseReason::NoFigures);
        assert_eq!(reason(figures(10, 8)), PauseReason::BelowThreshold);
        for figures in [figures(9, 9), None, figures(10, 8)] {
            let (paused, happened) = pass(&steps, Some(&status), 1, 3600, figures);
            let Happened::Paused { reason, .. } = happened else { panic!() };
            assert_eq!(pause_reason(&paused, &steps), reason, "the reason reads back from status");
        }
        let (paused, _) = pass(&steps, Some(&status), 1, 3600, None);
        assert!(paused_message(&paused, PauseReason::NoFigures, &steps, "gw").contains("no device census"));
    }

    #[test]
    fn a_pause_does_not_flap_when_the_figures_wobble_around_the_threshold() {
        let steps = plan();
        let (paused, _) = pass(&steps, Some(&started(&steps)), 1, 3600, figures(10, 8));
        let mut t = 3600;
        for (downloaded, running) in [(10, 9), (10, 8), (20, 19), (10, 10), (11, 9), (50, 50)] {
            t += 60;
            let (again, happened) = pass(&steps, Some(&paused), 1, t, figures(downloaded, running));
            assert_eq!(happened, Happened::StillPaused);
            assert_eq!(again, paused, "nothing moves, not even the figures, at {t}");
        }
    }

    #[test]
    fn an_edit_of_the_spec_judges_the_paused_step_again() {
        let steps = plan();
        let (advanced, _) = pass(&steps, Some(&started(&steps)), 1, 600, figures(10, 10));
        let (paused, _) = pass(&steps, Some(&advanced), 1, 4200, figures(10, 7));
        assert_eq!((paused.step, paused.percentage, paused.paused), (Some(2), 25, true));

        // A lower threshold the step's figures meet: the next step at once.
        let lower = Steps { threshold: 70, ..steps.clone() };
        let (next, happened) = pass(&lower, Some(&paused), 2, 4300, figures(10, 7));
        assert_eq!(happened, Happened::Advanced { from: 25, to: 50 });
        assert_eq!((next.step, next.percentage, next.paused), (Some(3), 50, false));
        assert_eq!(next.step_started, Some(Time(at(4300))));

        // A longer timeout: the step waits again, its figures still counted from its start.
        let longer = Steps { timeout: Duration::from_secs(7200), ..steps.clone() };
        let (resumed, happened) = pass(&longer, Some(&paused), 2, 4300, figures(10, 7));
        assert_eq!(happened, Happened::Resumed);
        assert_eq!((resumed.step, resumed.percentage), (Some(2), 25));
        assert_eq!(resumed.step_started, advanced.step_started, "the step's window stays");
        assert!(!resumed.paused && resumed.paused_generation.is_none());
        assert_eq!(figures_since(Some(&resumed), Some("1.1.0")), figures_since(Some(&advanced), Some("1.1.0")));
        assert!(next_look(Some(&resumed), Some(&longer), at(4300)).is_some());
        let (done, happened) = pass(&longer, Some(&resumed), 2, 4400, figures(20, 19));
        assert_eq!((happened, done.percentage), (Happened::Advanced { from: 25, to: 50 }, 50));

        // An edit that changes nothing for the step: still paused, no new event.
        let (still, happened) = pass(&steps, Some(&paused), 2, 4300, figures(10, 7));
        assert_eq!(happened, Happened::StillPaused);
        assert!(!happened.is_transition());
        assert_eq!((still.paused, still.paused_generation, still.step), (true, Some(2), Some(2)));
        // ... and sticky for the new generation.
        let (again, happened) = pass(&steps, Some(&still), 2, 4400, figures(10, 10));
        assert_eq!((happened, again), (Happened::StillPaused, still));
    }

    #[test]
    fn a_new_version_restarts_a_paused_rollout_at_step_1() {
        let steps = plan();
        let (paused, _) = pass(&steps, Some(&started(&steps)), 1, 3600, figures(10, 1));
        let seen = Seen {
            steps: Some(&steps),
            percentage: None,
            old: Some(&paused),
            latest: Some("1.2.0"),
            previous: Some("1.1.0"),
            generation: Some(1),
            now: at(4000),
            figures: figures(10, 1),
        };
        let (status, happened) = assess(&seen);
        let status = status.unwrap();
        assert_eq!(happened, Happened::Started);
        assert_eq!((status.version.as_str(), status.step, status.paused), ("1.2.0", Some(1), false));
    }

    #[test]
    fn steps_added_to_a_version_already_out_never_lower_its_share() {
        let steps = plan();
        let fixed = RolloutStatus { version: "1.1.0".into(), percentage: 30, ..Default::default() };
        let (status, _) = pass(&steps, Some(&fixed), 2, 0, None);
        assert_eq!((status.step, status.percentage, status.complete), (Some(3), 50, false));
        let all = RolloutStatus { percentage: 100, ..fixed };
        let (status, _) = pass(&steps, Some(&all), 2, 0, None);
        assert_eq!((status.step, status.percentage, status.complete), (Some(4), 100, true));
    }

    #[test]
    fn fewer_steps_after_an_edit_keep_the_rollout_within_them() {
        let steps = plan();
        let mut status = started(&steps);
        status.step = Some(3);
        status.percentage = 50;
        let two = Steps { shares: vec![50, 100], ..steps };
        let (status, happened) = pass(&two, Some(&status), 2, 60, None);
        assert_eq!((happened, status.step, status.percentage), (Happened::Waiting, Some(2), 100));
    }

    #[test]
    fn figures_are_read_since_the_step_began() {
        let steps = plan();
        let status = started(&steps);
        assert_eq!(figures_since(Some(&status), Some("1.1.0")), Some(UNIX_EPOCH + Duration::from_secs(T0 as u64)));
        assert_eq!(figures_since(Some(&status), Some("1.2.0")), None, "a new version starts its step now");
        assert_eq!(figures_since(None, Some("1.1.0")), None);
    }

    #[test]
    fn steps_are_checked_and_name_the_field() {
        let field = |r: Rollout| steps(&r).unwrap_err().field;
        let with = |s: Vec<i32>| Rollout { steps: s, ..Default::default() };
        assert_eq!(steps(&Rollout::default()).unwrap(), None);
        assert_eq!(steps(&Rollout { percentage: Some(30), ..Default::default() }).unwrap(), None);
        let ok = steps(&with(vec![5, 100])).unwrap().unwrap();
        assert_eq!((ok.dwell, ok.timeout, ok.threshold, ok.min_devices), (DEFAULT_DWELL, DEFAULT_TIMEOUT, 95, 10));
        for bad in [vec![5, 5, 100], vec![50, 25, 100], vec![0, 100], vec![5, 50], vec![5, 101]] {
            assert_eq!(field(with(bad.clone())), "rollout.steps", "{bad:?}");
        }
        assert_eq!(field(Rollout { percentage: Some(5), ..with(vec![100]) }), "rollout.steps");
        assert_eq!(field(Rollout { dwell: Some("soon".into()), ..with(vec![100]) }), "rollout.dwell");
        assert_eq!(field(Rollout { timeout: Some("1x".into()), ..with(vec![100]) }), "rollout.timeout");
        let short = Rollout { dwell: Some("1h".into()), timeout: Some("30m".into()), ..with(vec![100]) };
        assert_eq!(field(short), "rollout.timeout");
        assert_eq!(field(Rollout { success_threshold: Some(0), ..with(vec![100]) }), "rollout.successThreshold");
        assert_eq!(field(Rollout { min_devices: Some(0), ..with(vec![100]) }), "rollout.minDevices");
        assert_eq!(field(Rollout { percentage: Some(101), ..Default::default() }), "rollout.percentage");
        let seconds = Rollout { dwell: Some("5s".into()), timeout: Some("30s".into()), ..with(vec![50, 100]) };
        assert_eq!(steps(&seconds).unwrap().unwrap().dwell, Duration::from_secs(5));
    }

    #[test]
    fn events_say_what_happened() {
        let steps = plan();
        let status = started(&steps);
        assert_eq!(describe(&Happened::Started, &status, &steps, "gw"), "1.1.0 starts at step 1 (5 %)");
        let (next, happened) = pass(&steps, Some(&status), 1, 600, figures(10, 10));
        assert_eq!(
            describe(&happened, &next, &steps, "gw"),
            "1.1.0 advances from 5 % to step 2 (25 %): the step before passed"
        );
        assert_eq!(progress_message(&next, &steps), "1.1.0 at step 2 (25 %) of 4 since 08:10 UTC");
        assert!(happened.is_transition() && !Happened::Waiting.is_transition());
    }
}
