//! `bext-lock status`: who holds some keys, as the backend sees it.
//!
//! One instance is created for the look; it takes no lock, so looking never
//! disturbs a holder. The times are by the backend's clock (the plugin's
//! `inspect` answers them), so a skewed clock on this machine does not skew
//! them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bext_locking::{ErrorKind, LockInfo, PluginError};
use bext_locking_loader::FfiPlugin;

use crate::config;
use crate::{CliError, exit};

/// What `status` was asked to do.
pub struct StatusArgs {
    pub plugin: String,
    pub config: Option<String>,
    pub keys: Vec<String>,
    pub json: bool,
}

/// A loaded plugin's instance and the secrets of its config, shared with
/// `break`.
pub struct Opened {
    pub instance: FfiPlugin,
    pub secrets: bext_locking::redact::Secrets,
}

/// Reads the config, checks the keys, loads the plugin and creates one
/// instance: the first steps of `status` and `break`.
pub fn open(
    plugin: &str,
    config_arg: Option<&str>,
    keys: &[String],
    plugin_dirs: &[PathBuf],
) -> Result<Opened, CliError> {
    let config = config::read(config_arg, plugin).map_err(CliError::config)?;
    let secrets = config::secrets(&config);
    for key in keys {
        bext_locking::validate_key(key)
            .map_err(|e| CliError::usage(format!("key `{}`: {e}", shown(key))))?;
    }
    let lib = crate::resolve::load(plugin, plugin_dirs).map_err(CliError::error)?;
    let instance =
        lib.create_typed(&config.to_string()).map_err(|e| CliError::create_failed(&e, &secrets))?;
    Ok(Opened { instance, secrets })
}

/// The exit code and message for a failed admin call on `key`.
pub fn call_error(
    what: &str,
    key: &str,
    e: &PluginError,
    secrets: &bext_locking::redact::Secrets,
) -> CliError {
    let code = match e.kind {
        ErrorKind::Unsupported => exit::UNSUPPORTED,
        ErrorKind::InvalidArgument => exit::USAGE,
        _ => exit::BACKEND,
    };
    CliError::new(code, format!("cannot {what} `{}`: {}", shown(key), secrets.scrub(&e.message)))
}

/// A key as printed in messages: long keys are cut, so one line stays one line.
fn shown(key: &str) -> String {
    const MAX: usize = 80;
    if key.len() <= MAX {
        return key.to_owned();
    }
    let mut end = MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

/// `status`: inspects every key, then prints a table or JSON.
pub fn status(args: StatusArgs, plugin_dirs: &[PathBuf]) -> Result<i32, CliError> {
    if args.keys.is_empty() {
        return Err(CliError::usage("status needs at least one KEY"));
    }
    let opened = open(&args.plugin, args.config.as_deref(), &args.keys, plugin_dirs)?;
    let mut infos = Vec::with_capacity(args.keys.len());
    for key in &args.keys {
        let info = opened
            .instance
            .inspect(key)
            .map_err(|e| call_error("inspect", key, &e, &opened.secrets))?;
        infos.push(info);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos).unwrap_or_default());
    } else {
        print!("{}", table(&infos));
    }
    Ok(exit::OK)
}

/// A duration in milliseconds as people read it: `850ms`, `12.3s`, `4m 5s`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{}.{}s", ms / 1_000, (ms % 1_000) / 100);
    }
    // Whole seconds past a minute: the rest is noise for an operator.
    humantime::format_duration(Duration::from_secs(ms / 1_000)).to_string()
}

fn opt<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map(f).unwrap_or_else(|| "-".to_owned())
}

/// The status table: one row per key, `-` where the backend has no answer.
pub fn table(infos: &[LockInfo]) -> String {
    let rows: Vec<[String; 6]> = infos
        .iter()
        .map(|i| {
            [
                i.key.clone(),
                if i.held { "yes" } else { "no" }.to_owned(),
                opt(i.owner.as_deref(), str::to_owned),
                opt(i.fence, |f| f.to_string()),
                opt(i.expires_in_ms, human_ms),
                opt(i.held_for_ms, human_ms),
            ]
        })
        .collect();
    let head = ["key", "held", "owner", "fence", "expires in", "held for"];
    let mut widths = head.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (n, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if n + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&head.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(human_ms(0), "0ms");
        assert_eq!(human_ms(999), "999ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_900), "4m 5s");
    }

    #[test]
    fn the_table_has_a_row_per_key_and_dashes_for_unknowns() {
        let held = LockInfo {
            key: "jobs/nightly".into(),
            held: true,
            fence: Some(7),
            owner: Some("web-1:42:backup".into()),
            expires_in_ms: Some(29_500),
            held_for_ms: Some(500),
        };
        let text = table(&[held, LockInfo::free("free")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("key"), "{text}");
        assert!(lines[0].ends_with("held for"), "{text}");
        assert!(lines[1].contains("yes") && lines[1].contains("web-1:42:backup"), "{text}");
        assert!(
            lines[1].contains(" 7 ") && lines[1].contains("29.5s") && lines[1].ends_with("500ms")
        );
        assert!(lines[2].starts_with("free ") && lines[2].contains(" no "), "{text}");
        assert!(lines[2].ends_with('-'), "{text}");
        // Columns line up: every row's `held` cell starts where the header's does.
        let at = lines[0].find("held").unwrap();
        assert_eq!(&lines[1][at..at + 3], "yes");
        assert_eq!(&lines[2][at..at + 2], "no");
    }

    #[test]
    fn long_keys_are_cut_in_messages() {
        let key = "k".repeat(300);
        assert_eq!(shown(&key).chars().count(), 81);
        assert_eq!(shown("short"), "short");
    }
}
