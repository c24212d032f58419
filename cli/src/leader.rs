//! `bext-lock leader`: who leads an election (holds its key), and with
//! `--watch` each change of leader as it is seen.
//!
//! It looks with `inspect` and takes no lock, so watching never disturbs
//! the election. `--watch` looks every `--interval` and prints a line only
//! when the leader or its term changed (renewals, which move only the
//! expiry, are not changes); a leader that came and went between two looks
//! is not seen. A plugin has no way to push leader changes to a watcher, so
//! polling `inspect` (one cheap read per interval) is what every backend
//! can serve.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bext_locking::{Election, ErrorKind, Leader, PluginError};
use serde_json::json;

use crate::status::{call_error, human_ms, open};
use crate::{CliError, exit};

/// What `leader` was asked to do.
pub struct LeaderArgs {
    pub plugin: String,
    pub config: Option<String>,
    pub key: String,
    pub json: bool,
    pub watch: bool,
    pub interval: Duration,
}

/// One leader (or none) as a JSON object.
fn as_json(key: &str, leader: &Option<Leader>) -> serde_json::Value {
    let mut v = json!({ "key": key, "leader": leader.is_some() });
    if let Some(l) = leader {
        if let Some(owner) = &l.owner {
            v["owner"] = json!(owner);
        }
        if let Some(term) = l.term {
            v["term"] = json!(term);
        }
        if let Some(left) = l.expires_in {
            v["expires_in_ms"] = json!(crate::millis(left));
        }
    }
    v
}

/// One leader (or none) as a line for people.
fn as_text(key: &str, leader: &Option<Leader>) -> String {
    match leader {
        None => format!("{key}: no leader"),
        Some(l) => {
            let owner = l.owner.as_deref().unwrap_or("(owner not recorded)");
            let term = l.term.map(|t| format!(", term {t}")).unwrap_or_default();
            let left = l
                .expires_in
                .map(|d| format!(", expires in {}", human_ms(crate::millis(d))))
                .unwrap_or_default();
            format!("{key}: {owner}{term}{left}")
        }
    }
}

/// `leader`: prints the leader once, or every change with `--watch`.
pub fn leader(args: LeaderArgs, plugin_dirs: &[PathBuf]) -> Result<i32, CliError> {
    let keys = [args.key.clone()];
    let opened = open(&args.plugin, args.config.as_deref(), &keys, plugin_dirs)?;
    let secrets = opened.secrets;
    // The TTL only sets the default look interval, which is given here.
    let election =
        Election::new(Arc::new(opened.instance), args.key.clone(), Duration::from_secs(1));
    if !args.watch {
        let leader =
            election.leader().map_err(|e| call_error("inspect", &args.key, &e, &secrets))?;
        match args.json {
            true => println!("{}", as_json(&args.key, &leader)),
            false => println!("{}", as_text(&args.key, &leader)),
        }
        return Ok(exit::OK);
    }
    for seen in election.observe_every(args.interval) {
        match seen {
            Ok(leader) => println!("{}", as_json(&args.key, &leader)),
            Err(e) if e.kind == ErrorKind::Unsupported || e.kind == ErrorKind::InvalidArgument => {
                return Err(call_error("inspect", &args.key, &e, &secrets));
            }
            // A backend outage is a line too, and the watch goes on.
            Err(PluginError { message, .. }) => {
                println!("{}", json!({ "key": args.key, "error": secrets.scrub(&message) }));
            }
        }
    }
    Ok(exit::OK)
}
