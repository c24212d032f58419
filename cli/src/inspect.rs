//! `bext-lock plugins`, `describe` and `check`: looking at plugins.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bext_locking::conformance::{self, Options};
use bext_locking::{LockAdmin, LockWait};
use bext_locking_loader::{ScanOptions, SkipKind};
use serde::Serialize;
use serde_json::Value;

use crate::config;
use crate::resolve::{self, SearchDir};
use crate::{CliError, exit};

#[derive(Serialize)]
struct Found {
    name: String,
    version: String,
    abi_version: u32,
    fencing: bool,
    description: String,
    path: PathBuf,
}

#[derive(Serialize)]
struct Skip {
    path: PathBuf,
    kind: String,
    reason: String,
}

#[derive(Serialize)]
struct Listing {
    searched: Vec<PathBuf>,
    plugins: Vec<Found>,
    skipped: Vec<Skip>,
    /// Test fixtures found (loaded or not), kept apart from the plugins.
    fixtures: Vec<PathBuf>,
}

/// The file name prefix of the test fixtures the workspace builds beside
/// the real plugins (`target/debug/libbext_locking_fixture_careless.so`):
/// `plugins` lists them apart, and `make install` leaves them out.
const FIXTURE_PREFIX: &str = "libbext_locking_fixture_";

fn is_fixture(path: &std::path::Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(FIXTURE_PREFIX))
}

fn kind_name(kind: SkipKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// `plugins`: scans `dirs` (or the whole search path) and lists what loads.
pub fn plugins(dirs: &[PathBuf], plugin_dirs: &[PathBuf], json: bool) -> Result<i32, CliError> {
    let search: Vec<SearchDir> = if dirs.is_empty() {
        resolve::search_path(plugin_dirs)
    } else {
        dirs.iter().map(|d| SearchDir { dir: d.clone(), origin: "--dir" }).collect()
    };
    let mut listing = Listing {
        searched: Vec::new(),
        plugins: Vec::new(),
        skipped: Vec::new(),
        fixtures: Vec::new(),
    };
    for d in &search {
        // Default folders that do not exist are simply not there; a folder
        // the user named is reported, and so is a file named as one.
        if !dirs.is_empty() && !d.dir.is_dir() {
            let why = if d.dir.exists() { "not a folder" } else { "no such folder" };
            return Err(CliError::error(format!("--dir {}: {why}", d.dir.display())));
        }
        if !d.dir.is_dir() {
            continue;
        }
        listing.searched.push(d.dir.clone());
        let mut report = bext_locking_loader::scan(&d.dir, &ScanOptions::default());
        listing.fixtures.extend(
            report
                .loaded
                .iter()
                .map(|p| &p.path)
                .chain(report.skipped.iter().map(|s| &s.path))
                .filter(|p| is_fixture(p))
                .cloned(),
        );
        report.loaded.retain(|p| !is_fixture(&p.path));
        report.skipped.retain(|s| !is_fixture(&s.path));
        for p in report.loaded {
            if let Some(first) = listing.plugins.iter().find(|f| f.name == p.name) {
                listing.skipped.push(Skip {
                    path: p.path.clone(),
                    kind: "shadowed".to_owned(),
                    reason: format!(
                        "plugin `{}` is found first at {}",
                        p.name,
                        first.path.display()
                    ),
                });
                continue;
            }
            listing.plugins.push(Found {
                name: p.name,
                version: p.version,
                abi_version: p.abi_version,
                fencing: p.fencing,
                description: p.description,
                path: p.path,
            });
        }
        listing.skipped.extend(report.skipped.into_iter().map(|s| Skip {
            path: s.path,
            kind: kind_name(s.kind),
            reason: s.reason,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&listing).unwrap_or_default());
        return Ok(exit::OK);
    }
    print!("{}", listing_table(&listing));
    Ok(exit::OK)
}

fn listing_table(l: &Listing) -> String {
    let mut out = String::new();
    if l.plugins.is_empty() {
        out.push_str("no plugins found\n");
    } else {
        let w = l.plugins.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
        let v = l.plugins.iter().map(|p| p.version.len()).max().unwrap_or(7).max(7);
        let _ = writeln!(out, "{:<w$}  {:<v$}  abi  fencing  path", "name", "version");
        for p in &l.plugins {
            let fencing = if p.fencing { "yes" } else { "no" };
            let _ = writeln!(
                out,
                "{:<w$}  {:<v$}  {:<3}  {fencing:<7}  {}",
                p.name,
                p.version,
                p.abi_version,
                p.path.display()
            );
        }
    }
    if !l.skipped.is_empty() {
        out.push_str("\nskipped:\n");
        for s in &l.skipped {
            let _ = writeln!(out, "  {} ({}): {}", s.path.display(), s.kind, s.reason);
        }
    }
    if !l.fixtures.is_empty() {
        let mut names: Vec<String> = l
            .fixtures
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| {
                let n = n.to_string_lossy();
                let n = n.strip_prefix(FIXTURE_PREFIX).unwrap_or(&n);
                n.strip_suffix(".so").unwrap_or(n).replace('_', "-")
            })
            .collect();
        names.sort();
        names.dedup();
        let _ = writeln!(
            out,
            "\ntest fixtures, not listed above ({FIXTURE_PREFIX}*.so, built for the tests and never installed): {}",
            names.join(", ")
        );
    }
    let searched: Vec<String> = l.searched.iter().map(|d| d.display().to_string()).collect();
    let _ = writeln!(
        out,
        "\nsearched: {}",
        if searched.is_empty() { "(no folder exists)".to_owned() } else { searched.join(", ") }
    );
    out
}

/// `describe`: what a plugin says about itself.
pub fn describe(plugin: &str, plugin_dirs: &[PathBuf], json: bool) -> Result<i32, CliError> {
    let lib = resolve::load(plugin, plugin_dirs).map_err(CliError::error)?;
    let d = lib.describe().map_err(|e| CliError::new(exit::BACKEND, e))?;
    if json {
        let value = serde_json::json!({
            "name": d.name,
            "version": d.version,
            "abi_version": d.abi_version,
            "description": d.description,
            "fencing": d.fencing,
            "clock_drift": d.clock_drift,
            "path": lib.path(),
            "config_schema": d.config_schema,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut out = String::new();
    let _ = writeln!(out, "name:        {}", d.name);
    let _ = writeln!(out, "version:     {}", d.version);
    let _ = writeln!(out, "abi:         {}", d.abi_version);
    let fencing = if d.fencing { "yes (handles carry a fence by default)" } else { "no" };
    let _ = writeln!(out, "fencing:     {fencing}");
    let drift = match d.clock_drift {
        Some(stated) => format!("{stated} (stated by the plugin)"),
        None => format!("{} (the default: the plugin states none)", d.clock_drift_or_default()),
    };
    let _ = writeln!(out, "clock drift: {drift}");
    let _ = writeln!(out, "file:        {}", lib.path().display());
    let _ = writeln!(out, "description: {}", d.description);
    out.push_str(&schema_text(&d.config_schema));
    print!("{out}");
    Ok(exit::OK)
}

/// The config keys of a JSON Schema, one per line.
fn schema_text(schema: &Value) -> String {
    let mut out = String::from("config keys:\n");
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        out.push_str("  (none)\n");
        return out;
    };
    if props.is_empty() {
        out.push_str("  (none)\n");
    }
    let rows: Vec<(String, String, String)> = props
        .iter()
        .map(|(name, p)| {
            let ty = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => {
                    ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|")
                }
                _ => "any".to_owned(),
            };
            let req = if required.contains(&name.as_str()) { ", required" } else { "" };
            let default = p.get("default").map(|d| format!(" (default {d})")).unwrap_or_default();
            let desc = p.get("description").and_then(Value::as_str).unwrap_or("");
            (name.clone(), format!("{ty}{req}"), format!("{desc}{default}").trim_start().to_owned())
        })
        .collect();
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let t = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (name, ty, desc) in rows {
        let _ = writeln!(out, "  {name:<w$}  {ty:<t$}  {desc}");
    }
    let example = required.iter().map(|k| format!("\"{k}\":…")).collect::<Vec<_>>().join(",");
    let _ = writeln!(out, "minimal config: {{{example}}}");
    out
}

/// What `check` was asked to do.
pub struct CheckArgs {
    pub plugin: String,
    pub config: Option<String>,
    pub json: bool,
    pub only: Vec<String>,
    pub short_ttl: Duration,
    pub settle: Duration,
}

/// `check`: the conformance suite through the plugin's `.so`.
pub fn check(args: CheckArgs, plugin_dirs: &[PathBuf]) -> Result<i32, CliError> {
    let config = config::read(args.config.as_deref(), &args.plugin).map_err(CliError::config)?;
    let secrets = config::secrets(&config);
    let mut known = conformance::check_names();
    known.extend(conformance::admin_check_names());
    known.extend(conformance::wait_check_names());
    if let Some(bad) = args.only.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(CliError::usage(format!(
            "--only {bad}: no such check; the checks are: {}",
            known.join(", ")
        )));
    }
    let lib = resolve::load(&args.plugin, plugin_dirs).map_err(CliError::error)?;
    let config_text = config.to_string();
    // Fail early, with the plugin's own words, if no instance can be made.
    drop(lib.create_typed(&config_text).map_err(|e| CliError::create_failed(&e, &secrets))?);
    // Through the admin calls, so the ABI 1.1 checks (owner, inspect,
    // force_release, stats) run too; for a plugin without those slots (ABI
    // 1.0) each of them is reported as skipped, with the loader's reason.
    let factory = || lib.create_ffi(&config_text).map(|p| Box::new(p) as Box<dyn LockAdmin>);
    let options = Options {
        short_ttl_ms: crate::millis(args.short_ttl),
        settle_ms: crate::millis(args.settle),
        ..Options::default()
    };
    if !args.json {
        eprintln!(
            "bext-lock: checking {} ({}) with config {}",
            lib.name(),
            lib.path().display(),
            config::redacted(&config)
        );
    }
    let only: Vec<&str> = args.only.iter().map(String::as_str).collect();
    let mut report = conformance::run_admin_only(&factory, &options, &only);
    // And the ABI 1.2 checks (waiting, renew_for): skipped, with the
    // reason, for a plugin that does not list `lock_wait`.
    let factory = || lib.create_ffi(&config_text).map(|p| Box::new(p) as Box<dyn LockWait>);
    report.checks.extend(conformance::run_wait_only(&factory, &options, &only).checks);
    for c in &mut report.checks {
        c.message = secrets.scrub(&c.message);
    }
    report.backend = secrets.scrub(&report.backend);
    if args.json {
        let value = serde_json::json!({
            "plugin": lib.name(),
            "path": lib.path(),
            "passed": report.passed(),
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", report.table());
        if let Some(hint) = check_hint(&report) {
            eprintln!("bext-lock: hint: {}", crate::one_line(&hint));
        }
    }
    Ok(if report.passed() { exit::OK } else { exit::CHECK_FAILED })
}

/// What a failed check most likely means. When no check could take a lock
/// at all, the backend is down or unreachable (every call failed), and
/// that is what to fix; only when locking works but a second instance does
/// not see the first's lock do the instances not share one backend.
fn check_hint(report: &conformance::Report) -> Option<String> {
    let failed = |name: &str| report.failures().any(|c| c.name == name);
    let all_failed = !report.checks.is_empty() && report.checks.iter().all(|c| !c.passed);
    let unreachable = || {
        let first = report.failures().next().map(|c| c.message.as_str()).unwrap_or("");
        format!(
            "the backend is unreachable or refuses every call, so no check could take a lock; \
             check that it runs at the address in the config (first failure: {first})"
        )
    };
    if failed("acquire") {
        return Some(unreachable());
    }
    if failed("contention_from_other_instance") {
        return Some(
            "instances made from this config do not share locks; check needs a config that \
             points them at one backend (memory: {\"namespace\":\"check\"})"
                .to_owned(),
        );
    }
    if all_failed {
        return Some(unreachable());
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schema_lists_keys_with_required_and_defaults() {
        let schema = json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "description": "the file"},
                "busy_timeout_ms": {"type": "integer", "default": 5000}
            }
        });
        let text = schema_text(&schema);
        assert!(text.contains("  path             string, required  the file"), "{text}");
        assert!(text.contains("  busy_timeout_ms  integer           (default 5000)"), "{text}");
        assert!(text.contains("(default 5000)"), "{text}");
        assert!(text.contains("minimal config: {\"path\":…}"), "{text}");
        assert!(schema_text(&json!({"type":"object"})).contains("(none)"));
    }
}
