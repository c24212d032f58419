//! `bext-lock`: run a command once across a cluster, like `flock(1)` for
//! distributed locks, and inspect and check lock plugins.
//!
//! See `docs/CLI.md` for the full story; `bext-lock help <command>` for each
//! command.

#![forbid(unsafe_code)]

#[path = "break.rs"]
mod breaking;
mod config;
mod duration;
mod elect;
mod inspect;
mod leader;
mod lock;
mod owner;
mod plan;
mod resolve;
mod run;
mod status;
mod watchdog;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes, documented in `docs/CLI.md` and `bext-lock run --help`.
pub mod exit {
    /// Success (for `run`: the command's own status is passed through).
    pub const OK: i32 = 0;
    /// Something went wrong before the work started: unknown plugin, a
    /// plugin file refused or not loadable, signal handling unavailable.
    /// Also `check`'s "a check failed".
    pub const ERROR: i32 = 1;
    /// `check`: at least one conformance check failed.
    pub const CHECK_FAILED: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// `break`: the key was not held, so nothing was broken.
    pub const NOTHING_TO_BREAK: i32 = 3;
    /// `break --if-fence N`: the key is held at another fence (someone
    /// took it since), so nothing was broken.
    pub const FENCE_MISMATCH: i32 = 4;
    /// `status`, `break`: the plugin cannot answer the call (an ABI 1.0
    /// plugin has no `inspect` or `force_release`; a backend mode may
    /// refuse one), with the plugin's or the loader's reason. `run
    /// --min-hold`: the plugin cannot keep a lock past the command (no
    /// `renew_ttl`); nothing was locked or run.
    pub const UNSUPPORTED: i32 = 5;
    /// The plugin's config is wrong: `--config` is not a JSON object or its
    /// file cannot be read, or the plugin refuses it (an unknown key, a
    /// value out of range: `create` says `invalid_argument`). sysexits'
    /// `EX_CONFIG`: a typo, not an outage, so retrying cannot help.
    pub const CONFIG: i32 = 78;
    /// The lock backend returned an error (`create` or `try_lock`): the
    /// command was not run. Like sysexits' `EX_UNAVAILABLE`. (A `try_lock`
    /// the plugin refuses as `invalid_argument` is [`USAGE`].)
    pub const BACKEND: i32 = 69;
    /// The lock is held elsewhere (default of `-E`): the command was not
    /// run. sysexits' `EX_TEMPFAIL`: try again later.
    pub const CONTENDED: u8 = 75;
    /// The lock was lost while the command ran; the command was sent
    /// SIGTERM, then SIGKILL after the grace period or by the lease end,
    /// whichever came first.
    pub const LOST: i32 = 76;
    /// The command could not be executed (like a shell).
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The command was not found (like a shell).
    pub const NOT_FOUND: i32 = 127;
}

/// An error to print as one line, with the exit code to leave with.
#[derive(Debug)]
pub struct CliError {
    code: i32,
    message: String,
}

impl CliError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    fn error(message: impl Into<String>) -> Self {
        Self::new(exit::ERROR, message)
    }
    fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
    fn config(message: impl Into<String>) -> Self {
        Self::new(exit::CONFIG, message)
    }
    /// A failed `create`: the plugin refusing its config is [`exit::CONFIG`],
    /// anything else (an unreachable backend) [`exit::BACKEND`].
    fn create_failed(
        e: &bext_locking::PluginError,
        secrets: &bext_locking::redact::Secrets,
    ) -> Self {
        let code = if e.kind() == bext_locking::ErrorKind::InvalidArgument {
            exit::CONFIG
        } else {
            exit::BACKEND
        };
        Self::new(code, secrets.scrub(&e.message))
    }
}

/// A message as one line of output: every line break becomes `; ` (a
/// backend's multi-line error, clap's usage text) and every over-long word
/// is cut to its start and length.
pub fn one_line(message: &str) -> String {
    let mut out = String::new();
    for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    bext_locking::limits::shorten_values(&out).into_owned()
}

/// Clap's usage error as one line: its first line without `error: `, the
/// tips, and where to read more; `Usage:` blocks are left out.
fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    let mut in_usage = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            in_usage = false;
            continue;
        }
        if line.starts_with("Usage:") {
            in_usage = true;
            continue;
        }
        if in_usage || line.starts_with("For more information") {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
    }
    let sub = std::env::args().nth(1).filter(|a| {
        ["run", "plugins", "describe", "check", "status", "break", "elect", "leader"]
            .contains(&a.as_str())
    });
    let help = match sub {
        Some(sub) => format!("bext-lock {sub} --help"),
        None => "bext-lock --help".to_owned(),
    };
    parts.push(format!("see `{help}`"));
    one_line(&parts.join("\n"))
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

const ABOUT: &str = "Run a command once across a cluster (flock(1) for distributed locks), \
and inspect and check bext-locking plugins.";

const AFTER_HELP: &str = "\
PLUGIN is a path to a plugin library (contains '/' or ends in .so) or a name such as
`sqlite`, looked up as libbext_locking_<name>.so in, first match wins:
  1. each --plugin-dir, in order;   2. each folder of $BEXT_PLUGIN_DIR (':'-separated);
  3. the folder of this binary;     4. <that folder>/../lib/bext-locking
and, failing that, by the name a plugin in those folders reports.

Examples:
  bext-lock run sqlite -c '{\"path\":\"/var/lib/app/locks.db\"}' -k nightly --ttl 30s -- ./nightly.sh
  bext-lock plugins
  bext-lock describe redis
  bext-lock check ./libmy_plugin.so --config @my-plugin.json
  bext-lock status sqlite -c '{\"path\":\"/var/lib/app/locks.db\"}' nightly
  bext-lock break sqlite -c '{\"path\":\"/var/lib/app/locks.db\"}' nightly --if-fence 41";

#[derive(Parser)]
#[command(name = "bext-lock", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Look for plugins in DIR before the default folders (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    plugin_dir: Vec<PathBuf>,

    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    Run(RunCmd),
    Plugins(PluginsCmd),
    Describe(DescribeCmd),
    Check(CheckCmd),
    Status(StatusCmd),
    Break(BreakCmd),
    Elect(ElectCmd),
    Leader(LeaderCmd),
}

const RUN_AFTER: &str = "\
The command gets BEXT_LOCK_KEY, BEXT_LOCK_ID (this acquisition's lock id) and, when the
backend fences, BEXT_LOCK_FENCE (a number that rises with every acquisition: pass it to
what you write so it can refuse a stale holder). The command runs in its own process group
(like timeout(1); see --foreground): SIGINT, SIGTERM, SIGHUP and SIGQUIT that bext-lock gets
are passed on to that group, and on loss of the lock the whole group is stopped.

When the lock is lost (a renewal fails, no renewal is confirmed in time, or bext-lock was
paused), the command's group gets SIGTERM at once and SIGKILL after --grace, and in any case
100ms before the lease ends (the TTL counted from just before the request, less the
backend's clock-drift allowance): no process of the command outlives the lease. The loss is
signalled --grace + 100ms before the lease end at the latest, so the command always gets its
whole grace; after a pause of bext-lock itself it is killed at once. A watchdog process kills
the group if bext-lock dies (kill -9, OOM) or stays stopped past the lease end.

Exit status:
  the command's own     it ran while the lock was held (128+N if killed by signal N)
  75 (or -E CODE)       the lock is held elsewhere; the command did not run
  76                    the lock was lost while the command ran; it got SIGTERM, then
                        SIGKILL after --grace or by the lease end, whichever came first
  69                    the lock backend failed; the command did not run
  78                    the config is wrong: not a JSON object, unreadable, or refused by
                        the plugin (unknown key, value out of range)
  1                     bext-lock failed before locking (plugin not found or refused)
  2                     bad usage (also a --grace that does not fit the --ttl)
  5                     --min-hold on a plugin that cannot keep a lock (no `renew_ttl`)
  126, 127              the command could not be run / was not found
  128+N                 bext-lock got signal N while waiting for the lock (130: Ctrl-C);
                        the wait was cancelled and the command did not run";

/// `run`'s examples. Printed after clap's help exactly as written: clap
/// wraps its help text to the terminal, and a wrapped command line pasted
/// into a shell would run the job's part on its own, without the lock.
/// Each command is one line or ends its lines with ` \`.
const RUN_EXAMPLES: &str = "\
Examples:
  # Run the nightly report on one machine only; the others skip with 75:
  bext-lock run sqlite --config '{\"path\":\"/var/lib/app/locks.db\"}' \\
      --key reports/nightly --ttl 30s -- ./nightly-report.sh

  # Wait up to 2 minutes for the lock instead of skipping:
  bext-lock run redis --config @/etc/app/redis-lock.json \\
      --key deploy --ttl 1m --wait 2m -- ./deploy.sh

  # A cron line that treats 'someone else ran it' as success:
  bext-lock run pg --config @/etc/app/pg.json --key cleanup \\
      -E 0 -- ./cleanup.sh
";

/// The `--config` every command that opens a plugin takes.
#[derive(Args)]
struct ConfigArg {
    /// The plugin's config: JSON, or @FILE to read it from a file (keeps
    /// passwords out of `ps`). Default: {}.
    #[arg(
        short,
        long,
        value_name = "JSON|@FILE",
        env = "BEXT_LOCK_CONFIG",
        hide_env_values = true
    )]
    config: Option<String>,
}

/// The subcommand whose help the command line asks for (`run --help`,
/// `help run`), skipping the global `--plugin-dir DIR`.
fn help_subcommand() -> Option<String> {
    let mut args = std::env::args().skip(1);
    let mut words = Vec::new();
    while let Some(a) = args.next() {
        if a == "--plugin-dir" {
            args.next();
        } else if !a.starts_with('-') {
            words.push(a);
        }
    }
    match words.first().map(String::as_str) {
        Some("help") => words.get(1).cloned(),
        other => other.map(str::to_owned),
    }
}

/// Run a command only while holding a lock, renewing it in the background.
#[derive(Args)]
#[command(after_help = RUN_AFTER)]
struct RunCmd {
    /// The lock plugin: a name (e.g. sqlite, redis, pg, memory) or a path.
    plugin: String,
    /// The lock key (1 to 1024 bytes).
    #[arg(short, long)]
    key: String,
    /// Lease length, renewed every third of it while the command runs; if
    /// bext-lock dies, others wait at most this long: 500ms, 30s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_ttl)]
    ttl: Duration,
    #[command(flatten)]
    config: ConfigArg,
    /// If the lock is held, wait up to this long for it (notified by the
    /// plugin when it can, else polling with jittered backoff; -v says
    /// which) before giving up with the conflict exit code. Ctrl-C or
    /// SIGTERM cancels the wait (exit 130 / 143).
    #[arg(short, long, value_name = "DURATION", value_parser = duration::parse)]
    wait: Option<Duration>,
    /// Exit code when the lock is held elsewhere.
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "CODE", default_value_t = exit::CONTENDED)]
    conflict_exit_code: u8,
    /// After the lock is lost, how long the command gets between SIGTERM and
    /// SIGKILL. It must fit the lease: at most half the TTL less the
    /// backend's clock-drift allowance (1% + 2ms unless the plugin states
    /// less) and 100ms (a tenth of TTLs under 1s); more is a usage error.
    /// Default: 10s, or a third of the TTL if that is less (1s for --ttl 3s).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    grace: Option<Duration>,
    /// Keep the lock for at least this long after it was taken, even if the
    /// command finishes sooner: bext-lock then sets the lease to end when
    /// the hold does and exits at once, so no other node runs the job
    /// within DURATION of this start (schedulers or clocks that disagree).
    /// May exceed --ttl; 0 (the default) releases as the command ends. The
    /// plugin must list the `renew_ttl` capability, or the command is not
    /// run (exit 5).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = duration::parse)]
    min_hold: Duration,
    /// Keep the command in bext-lock's process group, so it can read the
    /// terminal and gets Ctrl-C directly; signals (and the SIGTERM/SIGKILL
    /// on loss) then reach the command alone, not what it started.
    #[arg(long)]
    foreground: bool,
    /// Say on stderr what happens (acquired, skipped, released).
    #[arg(short, long)]
    verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

const PLUGINS_AFTER: &str = "\
Without --dir, every folder of the plugin search path is scanned (see `bext-lock --help`).
Files that others than root or you can write are refused, as the loader does everywhere.

Examples:
  bext-lock plugins
  bext-lock plugins --dir /usr/local/lib/bext-locking
  bext-lock plugins --json";

/// List the plugins found, with name, version, ABI, fencing and path, and
/// the files skipped with the reason.
#[derive(Args)]
#[command(after_help = PLUGINS_AFTER)]
struct PluginsCmd {
    /// Scan only these folders (repeatable).
    #[arg(long, value_name = "DIR")]
    dir: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const DESCRIBE_AFTER: &str = "\
Examples:
  bext-lock describe sqlite
  bext-lock describe ./target/debug/libbext_locking_redis.so --json";

/// Show a plugin's capabilities and config keys.
#[derive(Args)]
#[command(after_help = DESCRIBE_AFTER)]
struct DescribeCmd {
    /// The plugin: a name or a path.
    plugin: String,
    /// Print the plugin's describe JSON (with its full config schema).
    #[arg(long)]
    json: bool,
}

const CHECK_AFTER: &str = "\
Instances are created from the same config, as if on two hosts sharing one backend; keys
live under a fresh random prefix, so a shared server is safe to check against. The memory
plugin needs a namespace for its instances to share locks: --config '{\"namespace\":\"check\"}'.

The ABI 1.1 checks (owner, inspect, force_release, stats) run too; for a plugin without
those slots (ABI 1.0) or a mode that answers `unsupported`, each is shown as `skip` with the
reason and does not fail the run.

Exit status: 0 when every check passed (or was skipped), 1 when one failed or the check could
not run, 69 when no instance could be created (the backend failed), 78 when the config is wrong
(not a JSON object, or the plugin refuses it), 2 on bad usage.

Examples:
  bext-lock check sqlite --config '{\"path\":\"/tmp/check.db\"}'
  bext-lock check ./libmy_plugin.so --config @my-plugin.json --json
  bext-lock check redis --config '{\"url\":\"redis://127.0.0.1:6379\"}' --only stale_release_is_noop";

/// Run the conformance suite against a plugin through its shared library.
#[derive(Args)]
#[command(after_help = CHECK_AFTER)]
struct CheckCmd {
    /// The plugin: a name or a path.
    plugin: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Run only this check (repeatable).
    #[arg(long, value_name = "CHECK")]
    only: Vec<String>,
    /// The short lease used by the expiry checks; raise it for backends
    /// with coarse clocks or slow round trips.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = duration::parse_positive)]
    short_ttl: Duration,
    /// Extra wait past the short lease before it counts as expired.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = duration::parse)]
    settle: Duration,
}

const STATUS_AFTER: &str = "\
Times are by the backend's clock. Nothing is locked or changed: looking never disturbs a
holder. The lock id (the right to release) is never shown. With --json, prints one JSON
array with an object per KEY, in order: {\"key\",\"held\",\"fence\"?,\"owner\"?,
\"expires_in_ms\"?,\"held_for_ms\"?} (a field is absent when the backend has no answer).

Exit status: 0 (whether or not the keys are held), 1 plugin not found or bad config,
2 bad usage or a key the plugin refuses, 5 the plugin cannot inspect (an ABI 1.0 plugin,
or a mode without inspect), 69 the backend failed.

Examples:
  bext-lock status sqlite --config '{\"path\":\"/var/lib/app/locks.db\"}' reports/nightly deploy
  bext-lock status redis --config @/etc/app/redis-lock.json jobs/nightly --json";

/// Show who holds KEYs: held, owner, fence, expires in, held for.
#[derive(Args)]
#[command(after_help = STATUS_AFTER)]
struct StatusCmd {
    /// The lock plugin: a name or a path.
    plugin: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Print a JSON array, one object per key.
    #[arg(long)]
    json: bool,
    /// The keys to look at.
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,
}

const BREAK_AFTER: &str = "\
Frees KEY whoever holds it. The plugin advances the fence: the broken holder's next renewal
fails (a `bext-lock run` holding it stops its command), its release does nothing, and the
next holder gets a higher fence, so storage that checks fences refuses the broken holder's
late writes. Give the fence `bext-lock status` showed (--if-fence), so that a holder that
took the key since is not broken; --force breaks whoever holds it.

Exit status:
  0    a lock was broken (printed: its fence, and its owner when known)
  3    nothing to break: KEY is not held
  4    --if-fence N: KEY is held at another fence; nothing was broken
  5    the plugin cannot break locks (an ABI 1.0 plugin, or a mode without force_release)
  69   the backend failed;  1 plugin not found or bad config;  2 bad usage (no --if-fence
       and no --force)

Examples:
  bext-lock status sqlite --config '{\"path\":\"/var/lib/app/locks.db\"}' reports/nightly
  bext-lock break sqlite --config '{\"path\":\"/var/lib/app/locks.db\"}' reports/nightly --if-fence 41";

/// Break a stuck lock (by its fence, or --force), fencing out its holder.
#[derive(Args)]
#[command(after_help = BREAK_AFTER)]
struct BreakCmd {
    /// The lock plugin: a name or a path.
    plugin: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Break only the holder at this fence (see `bext-lock status`).
    #[arg(long, value_name = "N")]
    if_fence: Option<u64>,
    /// Break whoever holds the key (needed without --if-fence).
    #[arg(long)]
    force: bool,
    /// The key to free.
    key: String,
}

const ELECT_AFTER: &str = "\
Campaigns for KEY (waiting for it: woken by the backend where the plugin can, else polling),
runs CMD while leader, and resigns (releases KEY) when CMD exits, so a waiting candidate
takes over at once. CMD gets BEXT_LOCK_KEY, BEXT_LOCK_ID and BEXT_LOCK_FENCE: the term, which
rises with every leader; pass it to what CMD writes so it can refuse a deposed leader. CMD is
stopped before the lease can pass to another leader, exactly as `bext-lock run` stops its
command when the lock is lost (SIGTERM, SIGKILL after --grace or by the lease end, a watchdog
if bext-lock dies or stops). A plugin whose locks carry no fence is refused unless
--allow-unfenced is given: without a term nothing can refuse a paused leader's late writes.

With --restart, bext-lock campaigns again after CMD exits or the leadership is lost (after a
pause of 1s when the term lasted less), until it gets SIGINT, SIGTERM, SIGHUP or SIGQUIT
(passed on to CMD if it runs). The owner recorded is host:pid:program, as `run` records.

Exit status:
  the command's own     it ran as leader and exited (128+N if killed by signal N)
  76                    the leadership was lost while the command ran; it was stopped
  128+N                 --restart: bext-lock got signal N (passed on to the command, if
                        one ran, and waited for)
  5                     the plugin does not fence (give --allow-unfenced)
  69, 78, 1, 2          the backend failed / bad config / plugin not found / bad usage
  126, 127              the command could not be run / was not found
  128+N                 bext-lock got signal N while campaigning";

/// `elect`'s examples, printed after clap's help unwrapped, as `run`'s are.
const ELECT_EXAMPLES: &str = "\
Examples:
  # One scheduler across the cluster; a standby takes over within the TTL:
  bext-lock elect redis --config @/etc/app/redis-lock.json \\
      --key services/scheduler --ttl 10s --restart -- ./scheduler

  # Who leads, and each change:
  bext-lock leader redis --config @/etc/app/redis-lock.json \\
      --key services/scheduler --watch
";

/// Campaign for leadership of KEY and run CMD while leader.
#[derive(Args)]
#[command(after_help = ELECT_AFTER)]
struct ElectCmd {
    /// The lock plugin: a name or a path.
    plugin: String,
    /// The election's key (1 to 1024 bytes).
    #[arg(short, long)]
    key: String,
    /// Lease length, renewed every third of it while leading: if the
    /// leader dies, the next one leads at most this much later.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration::parse_ttl)]
    ttl: Duration,
    #[command(flatten)]
    config: ConfigArg,
    /// After the leadership is lost, how long CMD gets between SIGTERM and
    /// SIGKILL; the same rules as `bext-lock run --grace`.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    grace: Option<Duration>,
    /// Campaign again after CMD exits or the leadership is lost.
    #[arg(long)]
    restart: bool,
    /// Lead on a plugin whose locks carry no fence (no term).
    #[arg(long)]
    allow_unfenced: bool,
    /// Keep CMD in bext-lock's process group (see `bext-lock run --help`).
    #[arg(long)]
    foreground: bool,
    /// Say on stderr what happens (campaigning, leading, resigned).
    #[arg(short, long)]
    verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

const LEADER_AFTER: &str = "\
Looks with `inspect` (by the backend's clock) and takes no lock. Prints `KEY: OWNER, term N,
expires in T` or `KEY: no leader`; --json prints {\"key\",\"leader\",\"owner\"?,\"term\"?,
\"expires_in_ms\"?}. --watch prints that JSON object as one line now and again each time the
leader or its term changes (renewals are not changes), looking every --interval, until
interrupted; a failed look prints {\"key\",\"error\"} and the watch goes on. A leader that
came and went between two looks is not seen.

Exit status: 0; 5 the plugin cannot inspect; 69 the backend failed; 1, 2, 78 as for `status`.

Examples:
  bext-lock leader redis --config @/etc/app/redis-lock.json --key services/scheduler
  bext-lock leader redis --config @/etc/app/redis-lock.json --key services/scheduler --watch";

/// Show who leads an election (owner, term, expires in), or watch it.
#[derive(Args)]
#[command(after_help = LEADER_AFTER)]
struct LeaderCmd {
    /// The lock plugin: a name or a path.
    plugin: String,
    /// The election's key.
    #[arg(short, long)]
    key: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print one JSON line per change of leader until interrupted.
    #[arg(long)]
    watch: bool,
    /// How often --watch looks.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = duration::parse_positive)]
    interval: Duration,
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == watchdog::ARG) {
        std::process::exit(watchdog::serve());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr
            // with 2, as one `bext-lock: ` line like every other error.
            if !e.use_stderr() {
                let _ = e.print();
                if e.kind() == clap::error::ErrorKind::DisplayHelp
                    && help_subcommand().as_deref() == Some("run")
                {
                    print!("\n{RUN_EXAMPLES}");
                }
                if e.kind() == clap::error::ErrorKind::DisplayHelp
                    && help_subcommand().as_deref() == Some("elect")
                {
                    print!("\n{ELECT_EXAMPLES}");
                }
                std::process::exit(exit::OK);
            }
            eprintln!("bext-lock: {}", clap_error_line(&e));
            std::process::exit(exit::USAGE);
        }
    };
    let dirs = cli.plugin_dir;
    let result = match cli.command {
        Commands::Run(r) => run::run(
            run::RunArgs {
                plugin: r.plugin,
                key: r.key,
                ttl: r.ttl,
                config: r.config.config,
                wait: r.wait,
                conflict_exit_code: r.conflict_exit_code,
                grace: r.grace,
                min_hold: r.min_hold,
                foreground: r.foreground,
                verbose: r.verbose,
                command: r.command,
            },
            &dirs,
        ),
        Commands::Plugins(p) => inspect::plugins(&p.dir, &dirs, p.json),
        Commands::Describe(d) => inspect::describe(&d.plugin, &dirs, d.json),
        Commands::Check(c) => inspect::check(
            inspect::CheckArgs {
                plugin: c.plugin,
                config: c.config.config,
                json: c.json,
                only: c.only,
                short_ttl: c.short_ttl,
                settle: c.settle,
            },
            &dirs,
        ),
        Commands::Status(s) => status::status(
            status::StatusArgs {
                plugin: s.plugin,
                config: s.config.config,
                keys: s.keys,
                json: s.json,
            },
            &dirs,
        ),
        Commands::Break(b) => breaking::run(
            breaking::BreakArgs {
                plugin: b.plugin,
                config: b.config.config,
                key: b.key,
                if_fence: b.if_fence,
                force: b.force,
            },
            &dirs,
        ),
        Commands::Elect(e) => elect::elect(
            elect::ElectArgs {
                plugin: e.plugin,
                key: e.key,
                ttl: e.ttl,
                config: e.config.config,
                grace: e.grace,
                restart: e.restart,
                allow_unfenced: e.allow_unfenced,
                foreground: e.foreground,
                verbose: e.verbose,
                command: e.command,
            },
            &dirs,
        ),
        Commands::Leader(l) => leader::leader(
            leader::LeaderArgs {
                plugin: l.plugin,
                config: l.config.config,
                key: l.key,
                json: l.json,
                watch: l.watch,
                interval: l.interval,
            },
            &dirs,
        ),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("bext-lock: {}", one_line(&e.message));
            std::process::exit(e.code);
        }
    }
}
