//! `bext-lock break`: frees a stuck lock, whoever holds it.
//!
//! Breaking is safe for the data only because the plugin's `force_release`
//! advances the fence: the broken holder's renewals fail from then on, and
//! storage that checks fences refuses its late writes. It still ends
//! someone's lease early, so the command wants either the fence the operator
//! saw in `bext-lock status` (`--if-fence`: breaks only that holder, never
//! one that took the key since) or an explicit `--force`.

use std::path::PathBuf;

use bext_locking::LockInfo;

use crate::status::{call_error, human_ms, open};
use crate::{CliError, exit};

/// What `break` was asked to do.
pub struct BreakArgs {
    pub plugin: String,
    pub config: Option<String>,
    pub key: String,
    pub if_fence: Option<u64>,
    pub force: bool,
}

/// `break`: force-releases the key and says what it broke.
pub fn run(args: BreakArgs, plugin_dirs: &[PathBuf]) -> Result<i32, CliError> {
    if args.if_fence.is_none() && !args.force {
        return Err(CliError::usage(format!(
            "break `{}` needs --if-fence N (the fence `bext-lock status` shows), or --force to \
             break whoever holds it",
            args.key
        )));
    }
    let opened =
        open(&args.plugin, args.config.as_deref(), std::slice::from_ref(&args.key), plugin_dirs)?;
    let key = args.key.as_str();
    // Who holds it, for the report only: the break itself is decided by the
    // plugin, atomically, by the fence.
    let before = opened.instance.inspect(key).ok();
    let broke = opened
        .instance
        .force_release(key, args.if_fence)
        .map_err(|e| call_error("break", key, &e, &opened.secrets))?;
    if broke.released {
        println!("{}", broke_line(key, broke.fence, before.as_ref()));
        return Ok(exit::OK);
    }
    let Some(wanted) = args.if_fence else {
        eprintln!("bext-lock: nothing to break: `{key}` is not held");
        return Ok(exit::NOTHING_TO_BREAK);
    };
    match opened.instance.inspect(key) {
        Ok(now) if now.held => {
            let current = now.fence.map(|f| format!("fence {f}")).unwrap_or_else(|| {
                "no fence (this backend does not fence; use --force)".to_owned()
            });
            eprintln!("bext-lock: not broken: `{key}` is held at {current}, not fence {wanted}");
            Ok(exit::FENCE_MISMATCH)
        }
        Ok(_) => {
            eprintln!("bext-lock: nothing to break: `{key}` is not held");
            Ok(exit::NOTHING_TO_BREAK)
        }
        // The plugin broke nothing but cannot say why: with a fence given,
        // a mismatch is the cautious reading.
        Err(_) => {
            eprintln!("bext-lock: not broken: `{key}` is not held at fence {wanted}");
            Ok(exit::FENCE_MISMATCH)
        }
    }
}

/// `broke jobs/nightly (fence 7, owner web-1:42:backup, held for 3m 2s)`.
fn broke_line(key: &str, fence: Option<u64>, before: Option<&LockInfo>) -> String {
    let mut parts = Vec::new();
    if let Some(f) = fence {
        parts.push(format!("fence {f}"));
    }
    // What inspect saw describes the broken holder only if it is the same
    // acquisition: same fence (or a backend without fences).
    if let Some(info) = before.filter(|i| i.held && i.fence == fence) {
        if let Some(owner) = &info.owner {
            parts.push(format!("owner {owner}"));
        }
        if let Some(ms) = info.held_for_ms {
            parts.push(format!("held for {}", human_ms(ms)));
        }
    }
    if parts.is_empty() {
        format!("broke `{key}`")
    } else {
        format!("broke `{key}` ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_broken_holder_only_when_it_is_the_one_seen() {
        let seen = LockInfo {
            key: "k".into(),
            held: true,
            fence: Some(7),
            owner: Some("h:1:job".into()),
            expires_in_ms: Some(1_000),
            held_for_ms: Some(2_500),
        };
        assert_eq!(
            broke_line("k", Some(7), Some(&seen)),
            "broke `k` (fence 7, owner h:1:job, held for 2.5s)"
        );
        // Another acquisition was broken than the one inspected.
        assert_eq!(broke_line("k", Some(8), Some(&seen)), "broke `k` (fence 8)");
        assert_eq!(broke_line("k", None, None), "broke `k`");
    }
}
