//! What the run found, gathered section by section and written as
//! `docs/BENCHMARKS.md` plus its chart.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::chart;
use crate::measure::{Kind, Tally, ratio};

/// Whether a target is met on this run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Verdict {
    /// Met.
    Met,
    /// Not met.
    NotMet,
    /// Not measured (a server or tool was missing, or a side failed).
    NoData,
    /// A figure that explains others; not a target.
    Info,
}

impl Verdict {
    /// `Met` when `ok`, else `NotMet`.
    pub fn of(ok: bool) -> Self {
        if ok { Self::Met } else { Self::NotMet }
    }

    fn cell(self) -> &'static str {
        match self {
            Self::Met => "**met**",
            Self::NotMet => "**not met**",
            Self::NoData => "not measured",
            Self::Info => "(information)",
        }
    }
}

/// One line of the project's speed targets.
#[derive(Serialize, Deserialize)]
pub struct Target {
    /// What it measures: a backend, or the loader.
    pub area: String,
    /// What is measured.
    pub what: String,
    /// The bar, e.g. ">= 0.95x".
    pub target: String,
    /// The figure this run got.
    pub measured: String,
    /// Met or not.
    pub verdict: Verdict,
    /// Why, in plain words, when it is not met (or a caveat when it is).
    pub note: String,
}

/// Everything the run found.
#[derive(Default, Serialize, Deserialize)]
pub struct Report {
    /// `(title, markdown)` per backend, in run order.
    pub sections: Vec<(String, String)>,
    /// Every target line.
    pub targets: Vec<Target>,
    /// The chart's groups.
    pub chart: Vec<chart::Group>,
}

impl Report {
    /// Adds a section.
    pub fn section(&mut self, title: impl Into<String>, body: impl Into<String>) {
        self.sections.push((title.into(), body.into()));
    }

    /// Adds a target line.
    pub fn target(
        &mut self,
        area: impl Into<String>,
        what: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        verdict: Verdict,
        note: impl Into<String>,
    ) {
        self.targets.push(Target {
            area: area.into(),
            what: plural(&what.into()),
            target: target.into(),
            measured: measured.into(),
            verdict,
            note: note.into(),
        });
    }

    /// Adds the target line "the `.so` reaches at least `bar` times the
    /// raw client's pairs/s" for one group, with the verdict, the measured
    /// ratio and, when it falls short, a note naming what the `.so` `adds`.
    /// A group where either side failed gets a no-data line.
    pub fn so_vs_raw_target(
        &mut self,
        area: &str,
        what: String,
        group: &[Tally],
        bar: f64,
        adds: &str,
    ) {
        let so = group.iter().find(|t| t.kind == Kind::So && t.ok());
        let raw = group.iter().find(|t| t.kind == Kind::Raw && t.ok());
        let (measured, verdict, note) = match (so, raw) {
            (Some(s), Some(r)) => (
                ratio_text(s, r),
                Verdict::of(median_ratio(s, r) >= bar),
                shortfall_note(s, r, bar, adds),
            ),
            _ => ("-".into(), Verdict::NoData, "a side failed".into()),
        };
        self.target(area, what, format!(">= {bar}x"), measured, verdict, note);
    }

    /// Adds a chart group: every side of `tallies` relative to the first
    /// side of kind `baseline`.
    pub fn chart_group(
        &mut self,
        title: impl Into<String>,
        tallies: &[Tally],
        baseline: Kind,
        target: Option<f64>,
    ) {
        let Some(base) = tallies.iter().find(|t| t.kind == baseline && t.ok()) else {
            return;
        };
        let bars = tallies
            .iter()
            .filter(|t| t.ok())
            .map(|t| {
                // The median round, as the verdicts read it.
                let value = if std::ptr::eq(t, base) { 1.0 } else { median_ratio(t, base) };
                chart::Bar {
                    label: t.label.clone(),
                    kind: t.kind,
                    value,
                    note: format!(
                        "{value:.2}x  {}/s  p50 {} µs",
                        thousands(t.rate()),
                        us(t.p50_us())
                    ),
                    rate: t.rate(),
                    p50_us: t.p50_us(),
                }
            })
            .collect();
        self.chart.push(chart::Group { title: plural(&title.into()), bars, target });
    }

    /// Appends everything `other` found.
    pub fn absorb(&mut self, other: Report) {
        self.sections.extend(other.sections);
        self.targets.extend(other.targets);
        self.chart.extend(other.chart);
    }

    /// The verdict counts, for the summary line.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |v| self.targets.iter().filter(|t| t.verdict == v).count();
        (n(Verdict::Met), n(Verdict::NotMet), n(Verdict::NoData))
    }

    /// The targets as a markdown table.
    pub fn targets_table(&self) -> String {
        let mut s = String::from(
            "| area | measurement | target | this run | verdict | why / caveat |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                t.area,
                t.what,
                t.target,
                t.measured,
                t.verdict.cell(),
                t.note.replace('\n', " ")
            );
        }
        s
    }
}

/// "1 thread(s)" as "1 thread", "8 thread(s)" as "8 threads" (and the
/// same for processes), so that labels can be written once for any count.
pub fn plural(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" thread(s)").or_else(|| rest.find(" process(es)")) {
        let (word, suffix) =
            if rest[i..].starts_with(" thread(s)") { (" thread", "s") } else { (" process", "es") };
        let one = rest[..i].rsplit(|c: char| !c.is_ascii_digit()).next() == Some("1");
        out.push_str(&rest[..i]);
        out.push_str(word);
        if !one {
            out.push_str(suffix);
        }
        rest = &rest[i + word.len() + if suffix == "s" { 3 } else { 4 }..];
    }
    out.push_str(rest);
    out
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Microseconds with the precision that matters at their size.
pub fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        thousands(v)
    }
}

/// A ratio as the verdicts read it: the median round first, with the
/// precision a verdict at 0.95 needs, e.g. `0.968x (0.95x overall)`.
pub fn ratio_text(a: &Tally, b: &Tally) -> String {
    match ratio(a, b) {
        Some(r) => format!("{:.3}x ({:.2}x overall)", r.median_round, r.overall),
        None => "-".into(),
    }
}

/// The two views of `a` against `b` that hardly move with the machine's
/// load, oriented like pairs/s (above 1: `a` is faster): median latency and
/// CPU time per pair.
pub fn steady_views(a: &Tally, b: &Tally) -> String {
    format!(
        "by p50 {:.2}x ({} vs {} µs), by CPU per pair {:.2}x ({} vs {} µs)",
        b.p50_us() / a.p50_us(),
        us(a.p50_us()),
        us(b.p50_us()),
        b.cpu_us() / a.cpu_us(),
        us(a.cpu_us()),
        us(b.cpu_us())
    )
}

/// The note of a "`.so` at least `bar` times the baseline" target: the
/// steady views, and when the target is missed, whether they say the `.so`
/// really costs more (`adds` says what it does on top) or the machine's
/// load fell unevenly on the rounds.
pub fn shortfall_note(so: &Tally, base: &Tally, bar: f64, adds: &str) -> String {
    let steady = steady_views(so, base);
    if median_ratio(so, base) >= bar {
        return steady;
    }
    let by_p50 = base.p50_us() / so.p50_us();
    let by_cpu = base.cpu_us() / so.cpu_us();
    if by_p50 >= bar && by_cpu >= bar {
        format!(
            "{steady}: by median latency and by CPU the .so is within the target, so the shortfall in pairs/s comes from other work on the machine falling unevenly on the rounds"
        )
    } else {
        format!("{steady}: the .so does more per pair: {adds}")
    }
}

/// The median-round ratio of `a` over `b` (NaN when either failed).
pub fn median_ratio(a: &Tally, b: &Tally) -> f64 {
    ratio(a, b).map_or(f64::NAN, |r| r.median_round)
}

/// The rows of one or more groups as a markdown table; "vs baseline"
/// compares each side with the first side of kind `baseline` in its group.
pub fn table(groups: &[&[Tally]], baseline: Kind, unit: &str) -> String {
    let mut s = format!(
        "| side | {unit} | pairs/s | p50 µs | p99 µs | CPU µs/pair | vs {} |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        match baseline {
            Kind::InProcess => "in-process",
            Kind::So => "direct call",
            _ => "raw client",
        }
    );
    for group in groups {
        let base = group.iter().find(|t| t.kind == baseline);
        for t in group.iter() {
            if let Some(e) = &t.error {
                let _ = writeln!(
                    s,
                    "| {} | {} | failed: {} | | | | |",
                    t.label,
                    t.threads,
                    e.replace('|', "/")
                );
                continue;
            }
            let vs = match base {
                Some(b) if b.kind == t.kind && b.label == t.label => "1 (baseline)".to_owned(),
                Some(b) => ratio_text(t, b),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.label,
                t.threads,
                thousands(t.rate()),
                us(t.p50_us()),
                us(t.p99_us()),
                us(t.cpu_us()),
                vs
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(us(0.4567), "0.46");
        assert_eq!(us(45.67), "45.7");
        assert_eq!(us(4567.0), "4,567");
        assert_eq!(plural("a, 1 thread(s), 8 thread(s)"), "a, 1 thread, 8 threads");
        assert_eq!(plural("4 process(es) and 1 process(es)"), "4 processes and 1 process");
        assert_eq!(plural("11 thread(s)"), "11 threads");
    }
}
