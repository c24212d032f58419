//! [`Stats`] as Prometheus text, for a service's own `/metrics`.

use std::fmt::Write;

use crate::Stats;

/// Escapes a label value as the Prometheus text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Stats {
    /// These statistics in the Prometheus text exposition format (version
    /// 0.0.4, which OpenMetrics scrapers also read), ready to append to a
    /// service's `/metrics` answer.
    ///
    /// Every sample carries `plugin="<plugin>"` and then `labels` (say, an
    /// instance name), escaped. Metric names start with `bext_locking_`:
    /// counters `…_acquired_total`, `…_contended_total`,
    /// `…_errors_total{code}`, `…_renewed_total`, `…_renew_failures_total`,
    /// `…_released_total`, `…_force_released_total`, and the histogram
    /// `…_call_duration_seconds{call="try_lock"|"renew"|"release"}` with
    /// cumulative buckets at the ABI's fixed bounds (no `_sum`: the plugin
    /// counts buckets only).
    pub fn to_prometheus(&self, plugin: &str, labels: &[(&str, &str)]) -> String {
        let mut base = format!("plugin=\"{}\"", escape(plugin));
        for (name, value) in labels {
            let _ = write!(base, ",{name}=\"{}\"", escape(value));
        }
        let mut out = String::new();
        let counters = [
            ("acquired", "try_lock calls that acquired the lock", self.acquired),
            ("contended", "try_lock calls that found the key held", self.contended),
            ("renewed", "renew calls that restarted the lease", self.renewed),
            ("renew_failures", "renew calls that failed: the lock is lost", self.renew_failures),
            ("released", "release calls answered OK", self.released),
            ("force_released", "locks broken by force_release", self.force_released),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP bext_locking_{name}_total {help}.");
            let _ = writeln!(out, "# TYPE bext_locking_{name}_total counter");
            let _ = writeln!(out, "bext_locking_{name}_total{{{base}}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP bext_locking_errors_total Calls answered with an error, by code."
        );
        let _ = writeln!(out, "# TYPE bext_locking_errors_total counter");
        let e = &self.errors;
        for (code, value) in [
            ("invalid_argument", e.invalid_argument),
            ("backend", e.backend),
            ("panic", e.panic),
            ("unsupported", e.unsupported),
        ] {
            let _ = writeln!(out, "bext_locking_errors_total{{{base},code=\"{code}\"}} {value}");
        }
        let name = "bext_locking_call_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time spent in each lock call, inside the plugin.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let l = &self.latency_us;
        for (call, counts) in
            [("try_lock", &l.try_lock), ("renew", &l.renew), ("release", &l.release)]
        {
            let mut cumulative = 0u64;
            for (i, count) in counts.iter().enumerate() {
                cumulative = cumulative.wrapping_add(*count);
                let le = match l.bounds.get(i) {
                    Some(&us) => format!("{}", us as f64 / 1e6),
                    None => "+Inf".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{base},call=\"{call}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "{name}_count{{{base},call=\"{call}\"}} {cumulative}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::STATS_BUCKETS;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let mut s = Stats { acquired: 3, contended: 2, renew_failures: 1, ..Stats::default() };
        s.errors.backend = 4;
        s.latency_us.try_lock[0] = 1;
        s.latency_us.try_lock[2] = 2;
        s.latency_us.try_lock[STATS_BUCKETS - 1] = 1;
        let text = s.to_prometheus("redis", &[("instance", "a\"b")]);
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE bext_locking_acquired_total counter",
            r#"bext_locking_acquired_total{plugin="redis",instance="a\"b"} 3"#,
            r#"bext_locking_contended_total{plugin="redis",instance="a\"b"} 2"#,
            r#"bext_locking_renew_failures_total{plugin="redis",instance="a\"b"} 1"#,
            r#"bext_locking_errors_total{plugin="redis",instance="a\"b",code="backend"} 4"#,
            "# TYPE bext_locking_call_duration_seconds histogram",
            r#"bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000001"} 1"#,
            r#"bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000002"} 1"#,
            r#"bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000005"} 3"#,
            r#"bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="5"} 3"#,
            r#"bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="+Inf"} 4"#,
            r#"bext_locking_call_duration_seconds_count{plugin="redis",instance="a\"b",call="try_lock"} 4"#,
            r#"bext_locking_call_duration_seconds_count{plugin="redis",instance="a\"b",call="release"} 0"#,
        ] {
            assert!(lines.contains(&want), "missing `{want}` in:\n{text}");
        }
        // One bucket line per bound plus +Inf, for each of the three calls.
        let buckets = lines.iter().filter(|l| l.contains("_bucket{")).count();
        assert_eq!(buckets, 3 * STATS_BUCKETS);
        // Every sample line is `name{labels} integer`.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
