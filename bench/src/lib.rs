//! The one benchmark report of bext-locking (`make bench`).
//!
//! Every backend's acquire+release pair is measured in-process, through its
//! `.so` and with the storage's raw client, at 1 and 8 threads (plus
//! `rslock` against the same Redis), and the findings are written to
//! `docs/BENCHMARKS.md` with an SVG chart.
//!
//! Each backend is measured by its own section binary
//! (`bext-bench-memory`, `-sqlite`, `-redis`, `-pg`, `-etcd`, `-mysql`), because every
//! backend rlib exports the same `bext_locking_plugin_entry` symbol and no
//! binary can link two of them. A section binary run by hand prints its
//! tables and targets; run with `--json FILE` by `bext-locking-bench`, the
//! orchestrator, it writes them for the report.
//!
//! This library holds what the binaries share: interleaved measurement
//! ([`measure`]), the plugin sides ([`plugin`]), the report ([`report`]),
//! the chart ([`chart`]) and the machine's description ([`machine`]).

#![deny(missing_docs)]

pub mod callgrind;
pub mod chart;
pub mod machine;
pub mod measure;
pub mod plugin;
pub mod report;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::measure::Settings;
use crate::report::Report;

/// What a section binary hands the orchestrator.
#[derive(Serialize, Deserialize, Default)]
pub struct Piece {
    /// Its tables, targets and chart groups.
    pub report: Report,
    /// Why it could not measure, if it could not.
    pub error: Option<String>,
}

/// The `main` of a section binary: runs `run` with the settings from the
/// environment, then writes the outcome as JSON to the file after `--json`,
/// or, without arguments, prints it for a human. Worker modes must be
/// handled before calling this.
pub fn section_main(name: &str, run: impl FnOnce(&Settings, &mut Report) -> Result<(), String>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--json" => Some(PathBuf::from(path)),
        _ => {
            eprintln!("usage: bext-bench-{name} [--json FILE]  (BENCH_SECS, BENCH_ROUNDS)");
            std::process::exit(2);
        }
    };
    let settings = Settings::from_env();
    eprintln!("{name}: {} s per side per group in {} rounds", settings.secs, settings.rounds);
    let mut report = Report::default();
    let error = run(&settings, &mut report).err();
    if let Some(e) = &error {
        eprintln!("  {name} not measured: {e}");
    }
    let piece = Piece { report, error };
    match out {
        Some(path) => {
            let json = serde_json::to_string(&piece).unwrap_or_else(|e| {
                format!(r#"{{"report":{{"sections":[],"targets":[],"chart":[]}},"error":"{e}"}}"#)
            });
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("bext-bench-{name}: write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        None => {
            for (title, body) in &piece.report.sections {
                println!("## {title}\n\n{body}");
            }
            println!("{}", piece.report.targets_table());
            if piece.error.is_some() {
                std::process::exit(1);
            }
        }
    }
}
