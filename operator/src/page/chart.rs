//! The devices-by-version chart of a channel: an inline SVG bar chart, one group per
//! version with a bar each for devices offered it, that downloaded it and that report
//! running it. No script and no external asset: a browser with JavaScript off draws it,
//! and every bar carries its figure as text, as a `<title>` (the tooltip, and what a
//! screen reader reads) and as `data-` attributes a test can read back.

use std::fmt::Write;

use updraft_crds::{DeviceCensus, VersionDevices};

use super::render::esc;

/// Height in pixels of the tallest bar.
pub(crate) const PLOT_HEIGHT: i64 = 160;
const BAR_WIDTH: i64 = 24;
const BAR_GAP: i64 = 4;
const GROUP_GAP: i64 = 32;
/// Room above the plot for the figure over the tallest bar.
const TOP: i64 = 22;
/// Room below the plot for the version labels.
const BOTTOM: i64 = 30;
const LEFT: i64 = 12;

/// The three figures of a version, in the order their bars are drawn.
const STATES: [(&str, &str); 3] = [("offered", "Offered"), ("downloaded", "Downloaded"), ("running", "Running")];

fn figure(v: &VersionDevices, state: &str) -> i64 {
    match state {
        "offered" => v.offered,
        "downloaded" => v.downloaded,
        _ => v.running,
    }
}

/// Height of a bar of `value` when the tallest is `max`: proportional, rounded to the
/// nearest pixel; 0 for an empty chart (and a negative figure, which the census never
/// writes).
pub(crate) fn bar_height(value: i64, max: i64) -> i64 {
    if max <= 0 || value <= 0 {
        return 0;
    }
    (value.min(max) * PLOT_HEIGHT + max / 2) / max
}

/// The SVG chart of `census`, oldest version on the left (the census lists newest first).
pub(crate) fn chart(channel: &str, census: &DeviceCensus) -> String {
    let versions: Vec<&VersionDevices> = census.by_version.iter().rev().collect();
    let max = versions.iter().flat_map(|v| STATES.iter().map(|(s, _)| figure(v, s))).max().unwrap_or(0);
    let group = 3 * BAR_WIDTH + 2 * BAR_GAP;
    let n = versions.len() as i64;
    let width = (LEFT * 2 + n * group + (n - 1).max(0) * GROUP_GAP).max(240);
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let base = TOP + PLOT_HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Devices by version on channel {}">"#,
        esc(channel)
    );
    let _ = write!(svg, r#"<line class="axis" x1="0" y1="{base}" x2="{width}" y2="{base}"/>"#);
    for (i, v) in versions.iter().enumerate() {
        let x0 = LEFT + i as i64 * (group + GROUP_GAP);
        let version = esc(&v.version);
        let _ = write!(svg, r#"<g class="version" data-version="{version}">"#);
        for (j, (state, label)) in STATES.iter().enumerate() {
            let value = figure(v, state);
            let h = bar_height(value, max);
            let x = x0 + j as i64 * (BAR_WIDTH + BAR_GAP);
            let devices = if value == 1 { "device" } else { "devices" };
            let _ = write!(
                svg,
                r#"<rect class="bar {state}" data-version="{version}" data-state="{state}" data-devices="{value}" x="{x}" y="{}" width="{BAR_WIDTH}" height="{h}"><title>{version}: {label} {value} {devices}</title></rect>"#,
                base - h
            );
            let _ = write!(
                svg,
                r#"<text class="figure" x="{}" y="{}" text-anchor="middle">{value}</text>"#,
                x + BAR_WIDTH / 2,
                base - h - 6
            );
        }
        let _ = write!(
            svg,
            r#"<text class="label" x="{}" y="{}" text-anchor="middle">{version}</text></g>"#,
            x0 + group / 2,
            base + 20
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_proportional_to_the_tallest() {
        assert_eq!(bar_height(100, 100), PLOT_HEIGHT);
        assert_eq!(bar_height(50, 100), 80);
        assert_eq!(bar_height(1, 3), 53); // 53.33 rounds down
        assert_eq!(bar_height(2, 3), 107); // 106.67 rounds up
        assert_eq!(bar_height(0, 100), 0);
        assert_eq!(bar_height(0, 0), 0, "an empty chart has no bars, and no division by zero");
        assert_eq!(bar_height(-3, 10), 0);
    }
}
