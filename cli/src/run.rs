//! `bext-lock run`: run a command only while holding a lock.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use bext_locking::{LockGuard, LockLost, ReleaseError};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use crate::config;
use crate::duration;
use crate::{CliError, exit};

/// What `run` was asked to do.
pub struct RunArgs {
    pub plugin: String,
    pub key: String,
    pub ttl: Duration,
    pub config: Option<String>,
    pub wait: Option<Duration>,
    pub conflict_exit_code: u8,
    pub grace: Duration,
    pub foreground: bool,
    pub verbose: bool,
    pub command: Vec<OsString>,
}

/// Something the main loop reacts to.
enum Event {
    /// A signal arrived; `from_kernel` is true for signals the terminal
    /// generates (Ctrl-C), which reach CMD directly as it shares our
    /// process group.
    Signal { signal: i32, from_kernel: bool },
    /// The guard reported the lock lost.
    Lost(LockLost),
}

/// Signals forwarded to CMD (and that interrupt `--wait`).
const FORWARDED: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// How often the main loop looks at the child even without a SIGCHLD.
const POLL: Duration = Duration::from_millis(200);

/// Backoff between attempts under `--wait`: it doubles from the first to the
/// last value, each sleep drawn at random from its upper half.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: Option<thread::JoinHandle<()>>,
}

impl SignalThread {
    fn start(events: Sender<Event>) -> Result<Self, CliError> {
        let mut wanted = FORWARDED.to_vec();
        wanted.push(SIGCHLD);
        let mut signals = SignalsInfo::<WithOrigin>::new(&wanted).map_err(|e| {
            CliError::new(exit::ERROR, format!("cannot set up signal handling: {e}"))
        })?;
        let handle = signals.handle();
        let thread = thread::Builder::new()
            .name("bext-lock-signals".into())
            .spawn(move || {
                for origin in signals.forever() {
                    let from_kernel = matches!(origin.cause, Cause::Kernel);
                    let event = Event::Signal { signal: origin.signal, from_kernel };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| CliError::new(exit::ERROR, format!("cannot start a thread: {e}")))?;
        Ok(Self { handle, thread: Some(thread) })
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: RunArgs, plugin_dirs: &[std::path::PathBuf]) -> Result<i32, CliError> {
    let config = config::read(args.config.as_deref()).map_err(CliError::error)?;
    let secrets = config::secrets(&config);
    bext_locking::validate_key(&args.key).map_err(|e| CliError::usage(format!("--key: {e}")))?;
    let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
    bext_locking::validate_ttl(ttl_ms).map_err(|e| CliError::usage(format!("--ttl: {e}")))?;
    if args.ttl < Duration::from_millis(3) {
        return Err(CliError::usage("--ttl: at least 3ms, so the lock can be renewed in time"));
    }

    let library = crate::resolve::load(&args.plugin, plugin_dirs).map_err(CliError::error)?;
    let verbose = |msg: &str| {
        if args.verbose {
            eprintln!("bext-lock: {msg}");
        }
    };
    verbose(&format!(
        "plugin {} {} from {}, config {}",
        library.name(),
        library.version(),
        library.path().display(),
        config::redacted(&config)
    ));
    let plugin = Arc::new(
        library
            .create_ffi(&config.to_string())
            .map_err(|e| CliError::new(exit::BACKEND, secrets.scrub(&e)))?,
    );

    let (events_tx, events) = mpsc::channel();
    let _signals = SignalThread::start(events_tx.clone())?;

    let guard = match acquire(&plugin, &args, &events, &secrets)? {
        Acquired::Guard(g) => g,
        Acquired::Contended => {
            verbose(&format!(
                "`{}` is held elsewhere; not running the command (exit {})",
                args.key, args.conflict_exit_code
            ));
            return Ok(i32::from(args.conflict_exit_code));
        }
        Acquired::Interrupted(signal) => return Ok(128 + signal),
    };
    let fence = guard.fence().map(|f| format!(", fence {f}")).unwrap_or_default();
    verbose(&format!("acquired `{}` for {}{fence}", args.key, duration::show(args.ttl)));
    let lost_tx = events_tx.clone();
    guard.on_lost(move |lost| {
        let _ = lost_tx.send(Event::Lost(lost.clone()));
    });
    drop(events_tx);

    if let Some(lost) = guard.lost() {
        // Lost between acquiring and starting (a very short TTL, a stall):
        // never start a command without the lock.
        eprintln!(
            "bext-lock: {}; the command was not started; exit {}",
            secrets.scrub(&lost.to_string()),
            exit::LOST
        );
        return Ok(exit::LOST);
    }
    let mut child = match spawn(&args.command, &guard, args.foreground) {
        Ok(child) => child,
        Err(e) => {
            let _ = guard.release();
            return Err(e);
        }
    };
    let outcome = supervise(&mut child, &events, args.grace, !args.foreground);

    if let Some(lost) = outcome.lost {
        let how = match outcome.status.and_then(|s| s.signal()) {
            Some(sig) => format!("stopped by signal {sig}"),
            None => "finished".to_owned(),
        };
        eprintln!(
            "bext-lock: the command {how} after the lock was lost ({}); exit {}",
            secrets.scrub(&lost.reason),
            exit::LOST
        );
        return Ok(exit::LOST);
    }
    let code = outcome.status.map(status_code).unwrap_or(exit::ERROR);
    match guard.release() {
        Ok(()) => verbose(&format!("released `{}`; the command exited {code}", args.key)),
        Err(ReleaseError::Lost(lost)) => {
            eprintln!(
                "bext-lock: {}; the command may have run unprotected at its end; exit {}",
                secrets.scrub(&lost.to_string()),
                exit::LOST
            );
            return Ok(exit::LOST);
        }
        Err(ReleaseError::Backend(e)) => eprintln!(
            "bext-lock: warning: could not release `{}` ({}); it frees itself when the TTL runs out",
            args.key,
            secrets.scrub(&e)
        ),
    }
    Ok(code)
}

enum Acquired {
    Guard(LockGuard),
    Contended,
    Interrupted(i32),
}

/// Tries once, or until `--wait` runs out, with jittered exponential backoff.
fn acquire(
    plugin: &Arc<bext_locking_loader::FfiPlugin>,
    args: &RunArgs,
    events: &Receiver<Event>,
    secrets: &Secrets,
) -> Result<Acquired, CliError> {
    let until = args.wait.map(|w| Instant::now() + w);
    let mut backoff = BACKOFF_FIRST;
    loop {
        if let Some(guard) = crate::lock::try_once(plugin, &args.key, args.ttl, secrets)? {
            return Ok(Acquired::Guard(guard));
        }
        let Some(until) = until else { return Ok(Acquired::Contended) };
        let now = Instant::now();
        if now >= until {
            return Ok(Acquired::Contended);
        }
        // Full jitter on the upper half: processes that collided once do
        // not keep colliding.
        let half = backoff / 2;
        let jitter = Duration::from_nanos(random_u64() % (half.as_nanos().max(1) as u64));
        let sleep = (half + jitter).min(until - now);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        let wake = Instant::now() + sleep;
        while let Some(left) = wake.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(Event::Signal { signal, .. }) if FORWARDED.contains(&signal) => {
                    return Ok(Acquired::Interrupted(signal));
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => thread::sleep(left),
            }
        }
    }
}

fn spawn(command: &[OsString], guard: &LockGuard, foreground: bool) -> Result<Child, CliError> {
    let (program, rest) = command.split_first().ok_or_else(|| CliError::usage("no command"))?;
    let mut cmd = Command::new(program);
    if !foreground {
        // Its own process group, so a lost lock stops everything CMD
        // started, not just CMD (a shell's children would run on).
        cmd.process_group(0);
    }
    cmd.args(rest).env("BEXT_LOCK_KEY", guard.key()).env("BEXT_LOCK_ID", &guard.handle().lock_id);
    match guard.fence() {
        Some(f) => cmd.env("BEXT_LOCK_FENCE", f.to_string()),
        // Never pass on a fence from an outer bext-lock: it is not ours.
        None => cmd.env_remove("BEXT_LOCK_FENCE"),
    };
    cmd.spawn().map_err(|e| {
        let name = program.to_string_lossy();
        match e.kind() {
            ErrorKind::NotFound => {
                CliError::new(exit::NOT_FOUND, format!("{name}: command not found"))
            }
            ErrorKind::PermissionDenied => {
                CliError::new(exit::NOT_EXECUTABLE, format!("{name}: permission denied"))
            }
            _ => CliError::new(exit::NOT_EXECUTABLE, format!("{name}: cannot run: {e}")),
        }
    })
}

struct Outcome {
    status: Option<ExitStatus>,
    lost: Option<LockLost>,
}

/// Where signals go: CMD's process group (the default), or CMD alone
/// (`--foreground`).
struct Target {
    pid: Pid,
    group: bool,
}

impl Target {
    fn send(&self, signal: i32) {
        let Ok(sig) = Signal::try_from(signal) else { return };
        // CMD may have just exited (not yet reaped): nothing to do then.
        let _ = if self.group { killpg(self.pid, sig) } else { kill(self.pid, sig) };
    }

    /// Whether anything is left in CMD's process group.
    fn group_alive(&self) -> bool {
        self.group && killpg(self.pid, None).is_ok()
    }
}

/// Waits for the child, forwarding signals, and on loss of the lock sends
/// SIGTERM, then SIGKILL after `grace`.
///
/// Only this thread reaps the child, and it signals the child only after
/// `try_wait` saw it still running: an unreaped child keeps its pid (and
/// its process group id), so a signal cannot hit a process that reused it.
fn supervise(child: &mut Child, events: &Receiver<Event>, grace: Duration, group: bool) -> Outcome {
    let target =
        Target { pid: Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)), group };
    let mut lost: Option<LockLost> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        let timeout = match kill_at {
            Some(at) => at.saturating_duration_since(Instant::now()).min(POLL),
            None => POLL,
        };
        let event = events.recv_timeout(timeout);
        match child.try_wait() {
            Ok(Some(status)) => {
                if lost.is_some() {
                    finish_group(&target, kill_at, grace);
                }
                return Outcome { status: Some(status), lost };
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("bext-lock: cannot wait for the command: {e}");
                return Outcome { status: None, lost };
            }
        }
        match event {
            Ok(Event::Signal { signal, from_kernel }) if FORWARDED.contains(&signal) => {
                // A terminal's signal already reached CMD if it shares our
                // process group; in its own group it did not.
                if group || !from_kernel {
                    target.send(signal);
                }
            }
            Ok(Event::Signal { .. }) => {} // SIGCHLD: looked at above
            Ok(Event::Lost(l)) => {
                if lost.is_none() {
                    eprintln!(
                        "bext-lock: {l}; sending SIGTERM to the command (pid {}), SIGKILL in {}",
                        target.pid,
                        duration::show(grace)
                    );
                    target.send(SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                    lost = Some(l);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Cannot happen while the guard lives; never spin if it does.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(timeout),
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            eprintln!(
                "bext-lock: the command is still running after {}; SIGKILL",
                duration::show(grace)
            );
            target.send(Signal::SIGKILL as i32);
            kill_at = None;
        }
    }
}

/// After a loss, CMD has exited but what it started may not have: give the
/// rest of its process group the rest of the grace period, then SIGKILL it.
fn finish_group(target: &Target, kill_at: Option<Instant>, grace: Duration) {
    let until = kill_at.unwrap_or_else(Instant::now);
    while target.group_alive() && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    if target.group_alive() {
        eprintln!(
            "bext-lock: processes the command started are still running after {}; SIGKILL",
            duration::show(grace)
        );
        target.send(Signal::SIGKILL as i32);
    }
}

/// A random number from std's per-process random hash keys (each
/// `RandomState` gets fresh keys), enough for jitter.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// The exit code a shell would report: the status, or 128 + the signal.
fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => exit::ERROR,
    }
}
