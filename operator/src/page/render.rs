//! The status page's HTML, a pure function of a [`View`]: every OtaGateway with the
//! channels, streams and mirrors attached to it, then the recent events. One document,
//! inline CSS, no script and no URL of any kind, so it renders the same with JavaScript
//! off and behind a proxy with no way out. Every string that came from the API (names,
//! versions, condition and event messages) goes through [`esc`]; a message cannot add
//! markup.
//!
//! It shows what the resources' status already says and nothing else: no spec field
//! naming a Secret, no Secret value, no device id (the census holds none).

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use updraft_crds::conditions::READY;
use updraft_crds::{ArtifactMirror, FirmwareChannel, ImageStream, OtaGateway};

use super::chart;
use crate::status::VERIFIED;

/// The condition a paused rollout carries (why it paused).
pub(crate) const ROLLOUT_PAUSED: &str = "RolloutPaused";

/// Everything the page shows, as read from the operator's caches and the API server.
pub(crate) struct View {
    pub gateways: Vec<OtaGateway>,
    pub channels: Vec<FirmwareChannel>,
    pub streams: Vec<ImageStream>,
    pub mirrors: Vec<ArtifactMirror>,
    pub events: Events,
    /// The namespace the operator watches; all when `None`.
    pub namespace: Option<String>,
    /// When the page was made (ages are relative to it).
    pub now: Timestamp,
}

/// The recent events about Updraft's resources, or why they could not be listed.
pub(crate) enum Events {
    Listed(Vec<EventLine>),
    Unavailable(String),
}

/// One event, as the page shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EventLine {
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
    /// How many times it happened (a series), at least 1.
    pub count: i32,
}

/// The resources one gateway serves: `gateway` is `None` when they name a gateway that
/// does not exist.
#[derive(Default)]
struct Group<'a> {
    gateway: Option<&'a OtaGateway>,
    channels: Vec<&'a FirmwareChannel>,
    streams: Vec<&'a ImageStream>,
    mirrors: Vec<&'a ArtifactMirror>,
}

const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2933; background: #f5f7fa; }
header.top { background: #1f2933; color: #f5f7fa; padding: 14px 32px; }
header.top h1 { margin: 0; font-size: 20px; font-weight: 600; letter-spacing: .2px; }
header.top p { margin: 2px 0 0; color: #9aa5b1; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 32px 40px; }
.summary { display: flex; gap: 12px; margin: 0 0 20px; padding: 0; list-style: none; }
.summary li { background: #fff; border: 1px solid #e4e7eb; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.summary b { display: block; font-size: 20px; font-weight: 600; }
.summary span { color: #616e7c; font-size: 12px; text-transform: uppercase; letter-spacing: .5px; }
section.gateway { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 4px 22px 18px; margin-bottom: 22px; }
h2 { font-size: 17px; margin: 16px 0 6px; font-weight: 600; }
h2 .ns, h4 .ns { color: #7b8794; font-weight: 400; }
h3 { font-size: 13px; margin: 20px 0 6px; color: #52606d; text-transform: uppercase; letter-spacing: .6px; font-weight: 600; }
h4 { font-size: 15px; margin: 0 0 6px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px 6px 0; border-bottom: 1px solid #eef0f3; vertical-align: top; }
th { font-size: 12px; color: #616e7c; font-weight: 600; border-bottom: 1px solid #d9dde2; white-space: nowrap; }
td { overflow-wrap: anywhere; }
td.when, .nowrap { white-space: nowrap; overflow-wrap: normal; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-right: 18px; }
.muted { color: #7b8794; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.ok { background: #e3f4ea; color: #1e6b3c; }
.warn { background: #fdf3d8; color: #8a5a00; }
.bad { background: #fde8e8; color: #a61b1b; }
.why { display: block; color: #52606d; font-size: 12px; margin-top: 2px; }
.channel { border-top: 1px solid #eef0f3; padding: 14px 0 4px; display: grid; grid-template-columns: minmax(260px, 1fr) auto; gap: 8px 28px; }
.channel p { margin: 0 0 6px; }
.paused { background: #fde8e8; color: #a61b1b; border: 1px solid #f5c2c2; border-radius: 6px; padding: 6px 10px; font-weight: 600; display: block; }
.paused .why { color: #7f1d1d; font-weight: 400; }
.figures { width: auto; font-size: 12px; }
.figures th, .figures td { padding: 2px 14px 2px 0; }
svg.chart { max-width: 100%; height: auto; display: block; }
svg.chart .axis { stroke: #9aa5b1; stroke-width: 1; }
svg.chart .offered { fill: #c5d3e8; }
svg.chart .downloaded { fill: #6d8fc7; }
svg.chart .running { fill: #1f4f99; }
svg.chart text { font-size: 11px; fill: #3e4c59; }
svg.chart text.label { font-size: 12px; font-weight: 600; }
.legend { font-size: 12px; color: #52606d; margin: 4px 0 0; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; vertical-align: -1px; }
.legend i.offered { background: #c5d3e8; } .legend i.downloaded { background: #6d8fc7; } .legend i.running { background: #1f4f99; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; color: #3e4c59; }
section.events { margin-top: 8px; }
"#;

/// Escapes `s` for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub(crate) fn render(view: &View) -> String {
    let groups = group(view);
    let mut html = String::with_capacity(16 * 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    // Refreshed by the browser itself, so the page stays current without a script.
    html.push_str("<meta http-equiv=\"refresh\" content=\"30\">");
    html.push_str("<title>Updraft status</title><style>");
    html.push_str(STYLE);
    html.push_str("</style></head><body>");
    let scope = match &view.namespace {
        Some(ns) => format!("namespace {}", esc(ns)),
        None => "all namespaces".into(),
    };
    let _ = write!(
        html,
        "<header class=\"top\"><h1>Updraft status</h1><p>Operator view of {scope} · generated <time datetime=\"{}\">{}</time> · refreshes every 30 s</p></header><main>",
        view.now,
        format_time(view.now)
    );
    summary(&mut html, view);
    if groups.is_empty() {
        html.push_str("<section class=\"gateway\" id=\"no-gateways\"><h2>No gateways</h2><p class=\"muted\">No OtaGateway, FirmwareChannel, ImageStream or ArtifactMirror exists in the watched namespaces yet.</p></section>");
    }
    for ((ns, name), g) in &groups {
        gateway_section(&mut html, ns, name, g, view.now);
    }
    events(&mut html, &view.events, view.now);
    html.push_str("</main></body></html>\n");
    html
}

/// The resources of each gateway, by namespace and gateway name.
fn group(view: &View) -> BTreeMap<(String, String), Group<'_>> {
    let mut groups: BTreeMap<(String, String), Group<'_>> = BTreeMap::new();
    let key = |ns: Option<String>, name: &str| (ns.unwrap_or_default(), name.to_owned());
    for gw in &view.gateways {
        groups.entry(key(gw.namespace(), &gw.name_any())).or_default().gateway = Some(gw);
    }
    for c in &view.channels {
        groups.entry(key(c.namespace(), &c.spec.gateway_ref)).or_default().channels.push(c);
    }
    for s in &view.streams {
        groups.entry(key(s.namespace(), &s.spec.gateway_ref)).or_default().streams.push(s);
    }
    for m in &view.mirrors {
        groups.entry(key(m.namespace(), &m.spec.gateway_ref)).or_default().mirrors.push(m);
    }
    for g in groups.values_mut() {
        g.channels.sort_by_key(|c| c.name_any());
        g.streams.sort_by_key(|s| s.name_any());
        g.mirrors.sort_by_key(|m| m.name_any());
    }
    groups
}

fn summary(html: &mut String, view: &View) {
    let paused = view.channels.iter().filter(|c| is_paused(c)).count();
    let item = |html: &mut String, n: usize, what: &str, id: &str| {
        let _ = write!(html, "<li id=\"count-{id}\"><b>{n}</b><span>{what}</span></li>");
    };
    html.push_str("<ul class=\"summary\">");
    item(html, view.gateways.len(), "Gateways", "gateways");
    item(html, view.channels.len(), "Channels", "channels");
    item(html, paused, "Paused rollouts", "paused");
    item(html, view.streams.len(), "Image streams", "streams");
    item(html, view.mirrors.len(), "Mirrors", "mirrors");
    html.push_str("</ul>");
}

fn gateway_section(html: &mut String, ns: &str, name: &str, g: &Group<'_>, now: Timestamp) {
    let _ = write!(
        html,
        "<section class=\"gateway\" id=\"gateway-{}-{}\" data-gateway=\"{}\"><h2>Gateway {} <span class=\"ns\">in {}</span></h2>",
        esc(ns),
        esc(name),
        esc(name),
        esc(name),
        esc(ns)
    );
    match g.gateway {
        Some(gw) => {
            let status = gw.status.clone().unwrap_or_default();
            html.push_str("<table class=\"gateway-status\"><thead><tr><th>Ready</th><th class=\"num\">Replicas ready</th><th>In-cluster URL</th></tr></thead><tbody><tr>");
            let _ = write!(
                html,
                "<td>{}</td><td class=\"num\">{} of {}</td><td><code>{}</code></td></tr></tbody></table>",
                ready(&status.conditions),
                status.ready_replicas,
                gw.spec.replicas,
                esc(status.url.as_deref().unwrap_or("—"))
            );
        }
        None => html.push_str(
            "<p><span class=\"badge bad\">Missing</span> No OtaGateway of this name exists; the resources below are not served.</p>",
        ),
    }
    channels(html, &g.channels, now);
    streams(html, &g.streams, now);
    mirrors(html, &g.mirrors, now);
    html.push_str("</section>");
}

fn channels(html: &mut String, channels: &[&FirmwareChannel], now: Timestamp) {
    html.push_str("<h3>Firmware channels</h3>");
    if channels.is_empty() {
        html.push_str("<p class=\"muted\">No FirmwareChannel.</p>");
        return;
    }
    html.push_str("<table class=\"channels\"><thead><tr><th>Channel</th><th>Latest</th><th>Previous</th><th>Rollout</th><th>Verified</th><th>Ready</th></tr></thead><tbody>");
    for c in channels {
        let status = c.status.clone().unwrap_or_default();
        let version = |v: Option<&updraft_crds::ResolvedVersion>| match v {
            Some(v) => format!("<code>{}</code>", esc(&v.version)),
            None => "<span class=\"muted\">—</span>".into(),
        };
        let _ = write!(
            html,
            "<tr data-channel=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.name_any()),
            esc(&c.name_any()),
            version(status.latest.as_ref()),
            version(status.previous.as_ref()),
            rollout_cell(c),
            verified(&status.conditions),
            ready(&status.conditions)
        );
    }
    html.push_str("</tbody></table>");
    for c in channels {
        channel_detail(html, c, now);
    }
}

/// The rollout's share, with its step when it has steps.
fn rollout_cell(c: &FirmwareChannel) -> String {
    let steps = c.spec.rollout.steps.len();
    match c.status.as_ref().and_then(|s| s.rollout.as_ref()) {
        Some(r) => match r.step {
            Some(step) if steps > 0 => format!("{} % · step {step} of {steps}", r.percentage),
            _ => format!("{} %", r.percentage),
        },
        None => format!("{} %", c.spec.rollout.percentage.unwrap_or(100)),
    }
}

fn is_paused(c: &FirmwareChannel) -> bool {
    let status = c.status.as_ref();
    status.and_then(|s| s.rollout.as_ref()).is_some_and(|r| r.paused)
        || status.and_then(|s| condition(&s.conditions, ROLLOUT_PAUSED)).is_some_and(|c| c.status == "True")
}

/// A channel's rollout, adoption and census chart.
fn channel_detail(html: &mut String, c: &FirmwareChannel, now: Timestamp) {
    let name = c.name_any();
    let status = c.status.clone().unwrap_or_default();
    let _ = write!(
        html,
        "<article class=\"channel\" id=\"channel-{}\" data-channel=\"{}\"><div><h4>{}</h4>",
        esc(&name),
        esc(&name),
        esc(&name)
    );
    if is_paused(c) {
        let r = status.rollout.as_ref();
        let step = match r.and_then(|r| r.step) {
            Some(step) => format!("step {step}"),
            None => "its step".into(),
        };
        let share = r.map(|r| format!(" ({} %)", r.percentage)).unwrap_or_default();
        let why = condition(&status.conditions, ROLLOUT_PAUSED)
            .map(|c| format!("<span class=\"why\">{}: {}</span>", esc(&c.reason), esc(&c.message)))
            .unwrap_or_default();
        let _ = write!(html, "<p class=\"paused\" data-paused=\"true\">Rollout paused at {step}{share}{why}</p>");
    }
    adoption(html, &status);
    match &status.devices {
        Some(census) => {
            let replicas = if census.replicas == 1 { "replica" } else { "replicas" };
            let _ = write!(
                html,
                "<p>{} devices in the last {} <span class=\"muted\">(from {} gateway {replicas}, {})</span></p>",
                census.total,
                esc(&census.window),
                census.replicas,
                time(&census.observed_at, now)
            );
            html.push_str("<table class=\"figures\"><thead><tr><th>Version</th><th class=\"num\">Offered</th><th class=\"num\">Downloaded</th><th class=\"num\">Running</th></tr></thead><tbody>");
            for v in &census.by_version {
                let _ = write!(
                    html,
                    "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&v.version),
                    v.offered,
                    v.downloaded,
                    v.running
                );
            }
            html.push_str("</tbody></table></div><div>");
            if census.by_version.is_empty() {
                html.push_str("<p class=\"muted\">No device reported a version in the window.</p>");
            } else {
                html.push_str(&chart::chart(&name, census));
                html.push_str("<p class=\"legend\" aria-hidden=\"true\"><i class=\"offered\"></i>Offered<i class=\"downloaded\"></i>Downloaded<i class=\"running\"></i>Running</p>");
            }
            html.push_str("</div>");
        }
        None => html.push_str(
            "<p class=\"muted no-census\">No device census yet: no gateway replica has reported devices for this channel.</p></div>",
        ),
    }
    html.push_str("</article>");
}

/// How many of the devices that downloaded the newest release report running it: the
/// rollout's figures for its step when it rolls that release out, else the census.
fn adoption(html: &mut String, status: &updraft_crds::FirmwareChannelStatus) {
    let Some(latest) = &status.latest else {
        html.push_str("<p class=\"muted\">No release resolved yet.</p>");
        return;
    };
    let from_rollout = status
        .rollout
        .as_ref()
        .filter(|r| r.version == latest.version)
        .and_then(|r| Some((r.downloaded?, r.running?, "since the step began")));
    let from_census = || {
        let census = status.devices.as_ref()?;
        let v = census.by_version.iter().find(|v| v.version == latest.version)?;
        Some((v.downloaded, v.running, "in the census window"))
    };
    match from_rollout.or_else(from_census) {
        Some((downloaded, running, when)) if downloaded > 0 => {
            let percent = (running.clamp(0, downloaded) * 100 / downloaded) as i32;
            let _ = write!(
                html,
                "<p class=\"adoption\" data-version=\"{}\" data-adoption=\"{percent}\">Adoption of <code>{}</code>: <b>{percent} %</b> <span class=\"muted\">({running} of {downloaded} devices that downloaded it report running it, {when})</span></p>",
                esc(&latest.version),
                esc(&latest.version)
            );
        }
        _ => {
            let _ = write!(
                html,
                "<p class=\"adoption muted\" data-version=\"{}\">Adoption of <code>{}</code>: no device has downloaded it yet.</p>",
                esc(&latest.version),
                esc(&latest.version)
            );
        }
    }
}

fn streams(html: &mut String, streams: &[&ImageStream], now: Timestamp) {
    html.push_str("<h3>Image streams</h3>");
    if streams.is_empty() {
        html.push_str("<p class=\"muted\">No ImageStream.</p>");
        return;
    }
    html.push_str("<table class=\"streams\"><thead><tr><th>Stream</th><th class=\"num\">Products</th><th class=\"num\">Versions</th><th>Rejected</th><th>Indexed</th><th>Ready</th></tr></thead><tbody>");
    for s in streams {
        let status = s.status.clone().unwrap_or_default();
        let rejected = match condition(&status.conditions, VERIFIED) {
            Some(c) if c.status == "False" => {
                format!("<span class=\"badge bad\">Rejected</span><span class=\"why\">{}</span>", esc(&c.message))
            }
            Some(_) => "<span class=\"muted\">none</span>".into(),
            None => "<span class=\"muted\">— (not verified)</span>".into(),
        };
        let _ = write!(
            html,
            "<tr data-stream=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{rejected}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name_any()),
            esc(&s.name_any()),
            status.products,
            status.versions,
            status.last_indexed.as_ref().map(|t| time(t, now)).unwrap_or_else(|| "<span class=\"muted\">never</span>".into()),
            ready(&status.conditions)
        );
    }
    html.push_str("</tbody></table>");
}

fn mirrors(html: &mut String, mirrors: &[&ArtifactMirror], now: Timestamp) {
    html.push_str("<h3>Artifact mirrors</h3>");
    if mirrors.is_empty() {
        html.push_str("<p class=\"muted\">No ArtifactMirror.</p>");
        return;
    }
    html.push_str("<table class=\"mirrors\"><thead><tr><th>Mirror</th><th class=\"num\">In sync</th><th class=\"num\">Pending</th><th>Oldest pending</th><th>Latest version</th><th>Last in sync</th><th>Ready</th></tr></thead><tbody>");
    for m in mirrors {
        let status = m.status.clone().unwrap_or_default();
        let time =
            |t: Option<&Time>| t.map(|t| time(t, now)).unwrap_or_else(|| "<span class=\"muted\">—</span>".into());
        let dry = if m.spec.dry_run { " <span class=\"badge warn\">dry run</span>" } else { "" };
        let _ = write!(
            html,
            "<tr data-mirror=\"{}\"><td>{}{dry}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.name_any()),
            esc(&m.name_any()),
            status.in_sync,
            status.pending,
            time(status.oldest_pending.as_ref()),
            status.latest_version.as_deref().map(|v| format!("<code>{}</code>", esc(v))).unwrap_or_else(|| "<span class=\"muted\">—</span>".into()),
            time(status.last_sync.as_ref()),
            ready(&status.conditions)
        );
    }
    html.push_str("</tbody></table>");
}

fn events(html: &mut String, events: &Events, now: Timestamp) {
    html.push_str("<section class=\"gateway events\" id=\"events\"><h2>Recent events</h2>");
    match events {
        Events::Unavailable(why) => {
            let _ = write!(html, "<p class=\"muted\">The events could not be listed: {}</p>", esc(why));
        }
        Events::Listed(lines) if lines.is_empty() => html.push_str("<p class=\"muted\">No recent event.</p>"),
        Events::Listed(lines) => {
            html.push_str("<table class=\"events\"><thead><tr><th>When</th><th>Type</th><th>Object</th><th>Reason</th><th>Message</th></tr></thead><tbody>");
            for e in lines {
                let badge = if e.type_ == "Warning" { "warn" } else { "ok" };
                let when = e.time.map(|t| since(t, now)).unwrap_or_default();
                let count =
                    if e.count > 1 { format!(" <span class=\"muted\">×{}</span>", e.count) } else { String::new() };
                let _ = write!(
                    html,
                    "<tr data-reason=\"{}\"><td class=\"when\">{}{count}</td><td><span class=\"badge {badge}\">{}</span></td><td><span class=\"nowrap\">{}/{}</span><span class=\"why\">in {}</span></td><td class=\"when\">{}</td><td>{}</td></tr>",
                    esc(&e.reason),
                    when,
                    esc(&e.type_),
                    esc(&e.kind),
                    esc(&e.name),
                    esc(&e.namespace),
                    esc(&e.reason),
                    esc(&e.message)
                );
            }
            html.push_str("</tbody></table>");
        }
    }
    html.push_str("</section>");
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The `Ready` condition as a badge, with its reason and message unless it is true.
fn ready(conditions: &[Condition]) -> String {
    match condition(conditions, READY) {
        Some(c) if c.status == "True" => "<span class=\"badge ok\">Ready</span>".into(),
        Some(c) if c.status == "False" => {
            format!("<span class=\"badge bad\">{}</span><span class=\"why\">{}</span>", esc(&c.reason), esc(&c.message))
        }
        Some(c) => format!(
            "<span class=\"badge warn\">{}</span><span class=\"why\">{}</span>",
            esc(&c.reason),
            esc(&c.message)
        ),
        None => "<span class=\"badge warn\">Pending</span>".into(),
    }
}

/// The `Verified` condition: yes, no (with why), or a dash when `spec.verify` is unset.
fn verified(conditions: &[Condition]) -> String {
    match condition(conditions, VERIFIED) {
        Some(c) if c.status == "True" => "<span class=\"badge ok\">Verified</span>".into(),
        Some(c) => {
            format!("<span class=\"badge bad\">{}</span><span class=\"why\">{}</span>", esc(&c.reason), esc(&c.message))
        }
        None => "<span class=\"muted\">—</span>".into(),
    }
}

/// `2026-12-06 23:40:05 UTC`.
fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `t` as a `<time>` element reading `2026-12-06 23:40:05 UTC (3 min ago)`.
fn time(t: &Time, now: Timestamp) -> String {
    format!("<time datetime=\"{}\">{}</time>", t.0, ago(t, now))
}

/// `t` as a `<time>` element reading `3 min ago`, the full time as its tooltip.
fn since(t: Timestamp, now: Timestamp) -> String {
    format!("<time datetime=\"{t}\" title=\"{}\">{}</time>", format_time(t), relative(now.as_second() - t.as_second()))
}

/// `2026-12-06 23:40:05 UTC (3 min ago)`.
fn ago(t: &Time, now: Timestamp) -> String {
    format!("{} ({})", format_time(t.0), relative(now.as_second() - t.0.as_second()))
}

/// `secs` seconds in the past, in words.
fn relative(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".to_owned(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86400 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        s => format!("{} d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    use super::*;
    use crate::fixtures::{self, channel_with_census, gateway, mirror, stream};

    const XSS: &str = "<script>alert(1)</script>";

    fn view() -> View {
        View {
            gateways: vec![gateway()],
            channels: vec![channel_with_census("esp32", &[("1.1.0", 40, 40, 30), ("1.0.0", 80, 80, 80)])],
            streams: vec![stream("images", json!({"products": 3, "versions": 7}))],
            mirrors: vec![mirror(
                "to-wan",
                json!({"inSync": 4, "pending": 2, "oldestPending": "2026-12-06T20:00:00Z"}),
            )],
            events: Events::Listed(vec![EventLine {
                time: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                type_: "Normal".into(),
                kind: "FirmwareChannel".into(),
                namespace: "fleet".into(),
                name: "esp32".into(),
                reason: "NewVersion".into(),
                message: "1.1.0 resolved".into(),
                count: 1,
            }]),
            namespace: Some("fleet".into()),
            now: Timestamp::from_second(1_800_000_060).unwrap(),
        }
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        serde_json::from_value(json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-06T20:00:00Z",
        }))
        .unwrap()
    }

    /// The `(data-version, data-state, data-devices, height)` of every bar.
    fn bars(html: &str) -> Vec<(String, String, i64, i64)> {
        let attr = |tag: &str, name: &str| {
            let start = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            tag[start..][..tag[start..].find('"').unwrap()].to_owned()
        };
        html.split("<rect ")
            .skip(1)
            .map(|tag| {
                let tag = &tag[..tag.find('>').unwrap()];
                (
                    attr(tag, "data-version"),
                    attr(tag, "data-state"),
                    attr(tag, "data-devices").parse().unwrap(),
                    attr(tag, "height").parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn every_bar_carries_its_figure_and_a_height_proportional_to_it() {
        let html = render(&view());
        let found = bars(&html);
        // Oldest version on the left; offered, downloaded, running; 80 is the tallest.
        let expected = [
            ("1.0.0", "offered", 80, 160),
            ("1.0.0", "downloaded", 80, 160),
            ("1.0.0", "running", 80, 160),
            ("1.1.0", "offered", 40, 80),
            ("1.1.0", "downloaded", 40, 80),
            ("1.1.0", "running", 30, 60),
        ];
        let expected: Vec<_> = expected.iter().map(|&(v, s, d, h)| (v.to_owned(), s.to_owned(), d, h)).collect();
        assert_eq!(found, expected);
        assert!(html.contains("<title>1.1.0: Running 30 devices</title>"), "each bar has a title");
        assert!(html.contains(">30</text>"), "each bar shows its number");
    }

    #[test]
    fn adoption_of_the_newest_release_and_the_rollout_step_are_shown() {
        let html = render(&view());
        assert!(html.contains("data-adoption=\"75\""), "30 of 40: 75 %");
        assert!(html.contains("30 of 40 devices that downloaded it"));
        assert!(html.contains("25 % · step 2 of 4"));
        assert!(!html.contains("data-paused"), "a running rollout is not marked paused");
    }

    #[test]
    fn adoption_falls_back_to_the_census_without_rollout_figures() {
        let mut v = view();
        v.channels[0].status.as_mut().unwrap().rollout = None;
        let html = render(&v);
        assert!(html.contains("data-adoption=\"75\""), "1.1.0 in the census: 30 of 40");
        assert!(html.contains("in the census window"));
    }

    #[test]
    fn a_paused_rollout_is_marked_with_its_step_and_reason() {
        let mut v = view();
        let status = v.channels[0].status.as_mut().unwrap();
        status.rollout.as_mut().unwrap().paused = true;
        status.conditions.push(condition(
            ROLLOUT_PAUSED,
            "True",
            "TooFewRunning",
            "12 of 40 devices run 1.1.0 (30 %), below 95 %",
        ));
        let html = render(&v);
        assert!(html.contains(
            "<p class=\"paused\" data-paused=\"true\">Rollout paused at step 2 (25 %)<span class=\"why\">TooFewRunning: 12 of 40 devices run 1.1.0 (30 %), below 95 %</span></p>"
        ), "{html}");
        assert!(html.contains("<li id=\"count-paused\"><b>1</b>"));
    }

    #[test]
    fn strings_from_the_api_are_shown_as_text() {
        let mut v = view();
        v.channels[0].status.as_mut().unwrap().conditions.push(condition(READY, "False", "Unreachable", XSS));
        v.streams[0].status.as_mut().unwrap().conditions.push(condition(VERIFIED, "False", "WrongKey", XSS));
        v.channels[0].status.as_mut().unwrap().devices.as_mut().unwrap().by_version[0].version = XSS.into();
        v.events = Events::Listed(vec![EventLine { message: XSS.into(), reason: XSS.into(), ..Default::default() }]);
        let html = render(&v);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // The Ready message, the rejection, the event's reason twice and its message, and the
        // version 9 times (its row in the figures, its group, 3 bars with 3 titles, its label).
        assert_eq!(html.matches("&lt;script&gt;").count(), 14, "every occurrence escaped, none dropped");
    }

    #[test]
    fn the_page_has_no_script_and_loads_nothing() {
        let html = render(&view());
        for absent in ["<script", "http://", "https://", "src=", "href=", "<link", "@import", "url("] {
            assert!(!html.contains(absent), "{absent} in the page");
        }
        // A URL in status is text, never an attribute.
        let mut v = view();
        v.gateways[0].status = Some(serde_json::from_value(json!({"url": "http://default.fleet.svc:8080"})).unwrap());
        let html = render(&v);
        assert!(html.contains("<code>http://default.fleet.svc:8080</code>"));
        assert!(!html.contains("=\"http"));
        // Not the mirror's store URL, nor the Secret it names, nor the registry.
        for absent in ["store.example", "wan-key", "127.0.0.1"] {
            assert!(!html.contains(absent), "{absent} in the page");
        }
    }

    #[test]
    fn streams_and_mirrors_have_their_rows() {
        let mut v = view();
        v.streams[0].status.as_mut().unwrap().conditions.push(condition(
            VERIFIED,
            "False",
            "WrongKey",
            "1 of 7 image versions refused",
        ));
        let html = render(&v);
        assert!(html.contains(
            "<tr data-stream=\"images\"><td>images</td><td class=\"num\">3</td><td class=\"num\">7</td><td><span class=\"badge bad\">Rejected</span><span class=\"why\">1 of 7 image versions refused</span>"
        ));
        assert!(html.contains(
            "<tr data-mirror=\"to-wan\"><td>to-wan</td><td class=\"num\">4</td><td class=\"num\">2</td><td><time datetime=\"2026-12-06T20:00:00Z\">2026-12-06 20:00:00 UTC ("
        ));
        assert!(html.contains("<tr data-reason=\"NewVersion\">"));
    }

    #[test]
    fn empty_states_say_so() {
        let empty = View {
            gateways: vec![],
            channels: vec![],
            streams: vec![],
            mirrors: vec![],
            events: Events::Listed(vec![]),
            namespace: None,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        };
        let html = render(&empty);
        assert!(html.contains("id=\"no-gateways\""));
        assert!(html.contains("No recent event."));
        assert!(html.contains("all namespaces"));

        // A gateway whose channel has no census yet, and no stream or mirror.
        let mut v = view();
        v.channels = vec![fixtures::channel("esp32", None, None)];
        v.streams.clear();
        v.mirrors.clear();
        v.events = Events::Unavailable("events is forbidden".into());
        let html = render(&v);
        assert!(html.contains("class=\"muted no-census\""));
        assert!(!html.contains("<svg"));
        assert!(html.contains("No release resolved yet."));
        assert!(html.contains("No ImageStream.") && html.contains("No ArtifactMirror."));
        assert!(html.contains("The events could not be listed: events is forbidden"));
    }

    #[test]
    fn resources_naming_a_missing_gateway_are_grouped_and_flagged() {
        let mut v = view();
        v.gateways.clear();
        let html = render(&v);
        assert!(html.contains("id=\"gateway-fleet-default\""));
        assert!(html.contains("No OtaGateway of this name exists"));
    }

    #[test]
    fn ages_are_relative_to_the_page() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| Time(Timestamp::from_second(1_800_000_000 - s).unwrap());
        assert!(ago(&at(5), now).ends_with("(5 s ago)"));
        assert!(ago(&at(125), now).ends_with("(2 min ago)"));
        assert!(ago(&at(3 * 3600 + 60), now).ends_with("(3 h 1 min ago)"));
        assert!(ago(&at(3 * 86400), now).ends_with("(3 d ago)"));
    }
}
