//! The results as a Markdown table with notes, and the section of
//! `docs/RELIABILITY.md` they replace.

use std::fmt::Write;

use crate::scenario::{Outcome, Status};

/// The markers around the generated part of the report file.
pub const BEGIN: &str = "<!-- bext-lock-safety:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bext-lock-safety:end -->";
/// The markers around the generated part for runs with `--wait`.
pub const WAIT_BEGIN: &str = "<!-- bext-lock-safety-wait:begin -->";
/// See [`WAIT_BEGIN`].
pub const WAIT_END: &str = "<!-- bext-lock-safety-wait:end -->";

fn status(o: &Outcome) -> &'static str {
    match o.status {
        Status::Safe => "safe",
        Status::Unsafe => "**UNSAFE**",
        Status::Inconclusive => "inconclusive",
    }
}

fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'").replace('|', "/"))
}

/// The table and a note per run that did something worth saying.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    // The acquire column only when some run waited, so that try_lock runs
    // read as they always have.
    let waited = outcomes.iter().any(|o| o.acquire != "try_lock");
    let (head, rule) = if waited { (" acquire |", " --- |") } else { ("", "") };
    let _ = writeln!(
        t,
        "| backend | fault |{head} processes × threads | s | operations | acquisitions | errors | overlaps | fence violations | result |"
    );
    let _ =
        writeln!(t, "| --- | --- |{rule} --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for o in outcomes {
        let fences =
            if o.fencing { o.fence_violations.to_string() } else { "n/a (no fences)".into() };
        let acquire = if waited { format!(" {} |", o.acquire) } else { String::new() };
        let _ = writeln!(
            t,
            "| {} | {} |{acquire} {} × {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            o.backend,
            o.fault,
            o.processes,
            o.threads,
            o.seconds,
            o.operations,
            o.acquisitions,
            o.errors,
            o.overlaps,
            fences,
            status(o)
        );
    }
    let mut notes = String::new();
    for o in outcomes {
        let mut parts: Vec<String> = match o.actions.as_slice() {
            [] => Vec::new(),
            [one] => vec![one.clone()],
            [first, ..] => vec![format!("{} times; the first: {first}", o.actions.len())],
        };
        if let Some(&worst) = o.recovered_ms.iter().max() {
            let n = o.recovered_ms.len();
            let times = if n == 1 { String::new() } else { format!(" (slowest of {n})") };
            parts.push(format!("lock granted again {worst} ms after the fault ended{times}"));
        }
        if let Some(after) = o.acquired_after_fault {
            parts.push(format!("{after} acquisitions after the last fault"));
        }
        if o.errors > 0 {
            let samples: Vec<String> = o.error_samples.iter().map(|s| code(s)).collect();
            parts.push(format!("{} errors, e.g. {}", o.errors, samples.join("; ")));
        }
        if o.stale_writes_rejected > 0 {
            parts.push(format!(
                "{} stale write(s) refused by the fenced storage",
                o.stale_writes_rejected
            ));
        }
        let mut renew_errors: Vec<&String> =
            o.stalls.iter().filter_map(|st| st.renew_error.as_ref()).collect();
        renew_errors.dedup();
        for e in renew_errors {
            parts.push(format!("renew error: {}", code(e)));
        }
        for b in &o.breaks {
            if let Some(e) = &b.renew_error {
                parts.push(format!("the broken holder's renew error: {}", code(e)));
            }
            parts.push(format!(
                "0 overlaps counted before the break is the lock's promise; after it, {} \
                 acquisition(s) began while the broken holder still believed it held the lock \
                 (not yet told: it learns at its next renew), and the storage {} its write with \
                 the old fence",
                b.overlapped_after_break,
                if b.stale_write_accepted { "ACCEPTED" } else { "refused" }
            ));
        }
        for f in &o.freezes {
            let takeover = f
                .last_write_before_takeover_ms
                .map(|m| format!(" and {m:.0} ms before the next holder's first acquisition"))
                .unwrap_or_default();
            parts.push(format!(
                "the frozen holder's job wrote {} times ({} after SIGTERM, which it ignores); \
                 **{} writes after the lease end**: the last came {:.0} ms before it{takeover}",
                f.writes,
                f.writes_after_sigterm.map_or("none".into(), |n| n.to_string()),
                f.writes_after_lease_end,
                f.last_write_before_lease_end_ms
            ));
        }
        // The first two say what went wrong; the counts say how often.
        parts.extend(o.problems.iter().take(2).map(|p| format!("VIOLATION: {p}")));
        parts.extend(o.trouble.iter().map(|p| format!("inconclusive: {p}")));
        if !parts.is_empty() {
            let _ = writeln!(notes, "- **{} / {}**: {}.", o.backend, o.fault, parts.join("; "));
        }
    }
    if notes.is_empty() { t } else { format!("{t}\n{notes}") }
}

/// Replaces what lies between [`BEGIN`] and [`END`] in `doc` with `body`.
pub fn splice(doc: &str, body: &str) -> Result<String, String> {
    splice_between(doc, body, BEGIN, END)
}

/// Replaces what lies between the lines `begin` and `end` in `doc` with
/// `body`.
pub fn splice_between(doc: &str, body: &str, begin: &str, end: &str) -> Result<String, String> {
    let start = doc.find(begin).ok_or_else(|| format!("no {begin} line"))?;
    let stop = doc.find(end).ok_or_else(|| format!("no {end} line"))?;
    if stop < start {
        return Err(format!("{end} comes before {begin}"));
    }
    Ok(format!("{}{begin}\n{body}{}", &doc[..start], &doc[stop..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault;

    #[test]
    fn splice_keeps_the_prose_around_the_markers() {
        let doc = format!("intro\n{BEGIN}\nold\n{END}\nafter\n");
        let new = splice(&doc, "new\n").unwrap();
        assert_eq!(new, format!("intro\n{BEGIN}\nnew\n{END}\nafter\n"));
        assert!(splice("no markers", "x").is_err());
    }

    #[test]
    fn table_has_a_row_per_outcome_and_notes_for_trouble() {
        let mut o = Outcome::failed("redis", Fault::Restart, "could not start | it".into());
        o.error_samples = vec!["a `b`".into()];
        o.errors = 1;
        let md = markdown(&[o]);
        assert!(md.contains("| redis | restart |"), "{md}");
        assert!(md.contains("inconclusive: could not start"), "{md}");
        assert!(md.contains("`a 'b'`"), "{md}");
        assert!(!md.contains("acquire"), "no acquire column without a wait: {md}");
    }

    #[test]
    fn a_waiting_run_gets_an_acquire_column_and_its_own_markers() {
        let mut o = Outcome::failed("memory", Fault::None, "x".into());
        o.acquire = "lock_wait (polling)".into();
        let md = markdown(&[o]);
        assert!(md.contains("| memory | none | lock_wait (polling) |"), "{md}");
        let doc = format!("{BEGIN}\nkept\n{END}\n{WAIT_BEGIN}\nold\n{WAIT_END}\n");
        let new = splice_between(&doc, "new\n", WAIT_BEGIN, WAIT_END).unwrap();
        assert_eq!(new, format!("{BEGIN}\nkept\n{END}\n{WAIT_BEGIN}\nnew\n{WAIT_END}\n"));
    }
}
