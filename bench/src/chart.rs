//! A horizontal bar chart written as plain SVG: each group is one backend
//! at one thread count, each bar a side's pairs/s relative to the group's
//! baseline, with the baseline (1.0) and the project's target marked.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::measure::Kind;

/// One bar.
#[derive(Serialize, Deserialize)]
pub struct Bar {
    /// Side label.
    pub label: String,
    /// What it is (its colour).
    pub kind: Kind,
    /// Pairs/s relative to the group's baseline.
    pub value: f64,
    /// Text after the bar (absolute figures).
    pub note: String,
    /// Pairs/s, for the report's summary (0 when a section did not say).
    #[serde(default)]
    pub rate: f64,
    /// Median latency of a pair in µs, for the report's summary.
    #[serde(default)]
    pub p50_us: f64,
}

/// One group of bars.
#[derive(Serialize, Deserialize)]
pub struct Group {
    /// e.g. "redis, 1 node, 8 threads".
    pub title: String,
    /// Its bars, baseline included.
    pub bars: Vec<Bar>,
    /// Where the `.so` should be at least, relative to the baseline.
    pub target: Option<f64>,
}

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::InProcess => "#4c78a8",
        Kind::So => "#f58518",
        Kind::SoAlt => "#ffbf79",
        Kind::Raw => "#8c8c8c",
        Kind::RawAlt => "#c4c4c4",
        Kind::Rslock => "#b279a2",
        Kind::Peer => "#54a24b",
    }
}

fn legend_label(kind: Kind) -> &'static str {
    match kind {
        Kind::InProcess => "in-process (rlib)",
        Kind::So => ".so via the loader",
        Kind::SoAlt => ".so, other config",
        Kind::Raw => "raw client (baseline)",
        Kind::RawAlt => "raw client, variant",
        Kind::Rslock => "rslock",
        Kind::Peer => "Python lock library",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const WIDTH: f64 = 1100.0;
const LABEL_W: f64 = 250.0;
const PLOT_W: f64 = 470.0;
const BAR_H: f64 = 13.0;
const BAR_GAP: f64 = 3.0;
const GROUP_HEAD: f64 = 20.0;
const GROUP_GAP: f64 = 8.0;
const TOP: f64 = 70.0;

/// The chart, titled `title`, as an SVG document.
pub fn svg(title: &str, subtitle: &str, groups: &[Group]) -> String {
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.value))
        .filter(|v| v.is_finite())
        .fold(1.2f64, f64::max)
        .min(3.0);
    let x_max = (max * 10.0).ceil() / 10.0;
    let x = |v: f64| LABEL_W + PLOT_W * (v.clamp(0.0, x_max) / x_max);
    let height = TOP
        + groups
            .iter()
            .map(|g| GROUP_HEAD + g.bars.len() as f64 * (BAR_H + BAR_GAP) + GROUP_GAP)
            .sum::<f64>()
        + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(s, r##"<text x="10" y="37" fill="#555">{}</text>"##, esc(subtitle));

    // Legend.
    let mut lx = 10.0;
    for kind in
        [Kind::InProcess, Kind::So, Kind::SoAlt, Kind::Raw, Kind::RawAlt, Kind::Rslock, Kind::Peer]
    {
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="47" width="12" height="12" fill="{}"/><text x="{}" y="57">{}</text>"##,
            colour(kind),
            lx + 16.0,
            legend_label(kind)
        );
        lx += 30.0 + 6.5 * legend_label(kind).len() as f64;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="53" x2="{}" y2="53" stroke="#d62728" stroke-width="2" stroke-dasharray="4 2"/><text x="{}" y="57">target for the .so</text>"##,
        lx + 18.0,
        lx + 22.0
    );

    // Grid: every 0.2, the baseline solid.
    let bottom = height - 30.0;
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let gx = x(v);
        let (stroke, w) = if (v - 1.0).abs() < 1e-9 { ("#333", 1.5) } else { ("#e3e3e3", 1.0) };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom:.1}" stroke="{stroke}" stroke-width="{w}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{v:.1}x</text>"##,
            bottom + 14.0
        );
        v += 0.2;
    }

    let mut y = TOP;
    for g in groups {
        let _ = writeln!(
            s,
            r##"<text x="10" y="{:.1}" font-weight="bold">{}</text>"##,
            y + 14.0,
            esc(&g.title)
        );
        let top = y + GROUP_HEAD - 2.0;
        y += GROUP_HEAD;
        for b in &g.bars {
            let w = (x(b.value) - LABEL_W).max(if b.value > 0.0 { 1.0 } else { 0.0 });
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                LABEL_W - 6.0,
                y + BAR_H - 3.0,
                esc(&b.label),
                colour(b.kind),
                LABEL_W + PLOT_W + 8.0,
                y + BAR_H - 3.0,
                esc(&b.note)
            );
            y += BAR_H + BAR_GAP;
        }
        if let Some(t) = g.target {
            let tx = x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{tx:.1}" y1="{top:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#d62728" stroke-width="2" stroke-dasharray="4 2"/>"##,
                y - BAR_GAP + 1.0
            );
        }
        y += GROUP_GAP;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_and_escapes_labels() {
        let g = Group {
            title: "a <b> & c".into(),
            bars: vec![
                Bar {
                    label: "raw".into(),
                    kind: Kind::Raw,
                    value: 1.0,
                    note: "1/s".into(),
                    rate: 1.0,
                    p50_us: 1.0,
                },
                Bar {
                    label: ".so".into(),
                    kind: Kind::So,
                    value: 9.0,
                    note: "9/s".into(),
                    rate: 9.0,
                    p50_us: 0.1,
                },
            ],
            target: Some(0.95),
        };
        let out = svg("t", "s", &[g]);
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        // Every line is one element: no Rust source swallowed by a raw string.
        for line in out.lines() {
            assert!(line.starts_with('<') && line.ends_with('>'), "stray text in the SVG: {line}");
        }
        assert!(out.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(out.matches("<rect").count(), 1 + 7 + 2);
    }
}
