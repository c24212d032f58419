//! `bext-lock run`: run a command only while holding a lock.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use bext_locking::{
    GuardOptions, LockGuard, LockLost, LossCause, PluginError, ReleaseError, Wait, WaitMode,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use crate::config;
use crate::duration;
use crate::plan::{self, Plan};
use crate::watchdog::Watchdog;
use crate::{CliError, exit};

/// What `run` was asked to do.
pub struct RunArgs {
    pub plugin: String,
    pub key: String,
    pub ttl: Duration,
    pub config: Option<String>,
    pub wait: Option<Duration>,
    pub conflict_exit_code: u8,
    /// `None`: the default, which adapts to the TTL.
    pub grace: Option<Duration>,
    /// `--min-hold`: zero keeps today's release at the end.
    pub min_hold: Duration,
    pub foreground: bool,
    pub verbose: bool,
    pub command: Vec<OsString>,
}

/// Something the main loop reacts to.
pub(crate) enum Event {
    /// A signal arrived; `from_kernel` is true for signals the terminal
    /// generates (Ctrl-C), which reach CMD directly as it shares our
    /// process group.
    Signal { signal: i32, from_kernel: bool },
    /// The guard reported the lock lost.
    Lost(LockLost),
    /// The `--wait` for the lock ended: the lock, or `None` (timed out or
    /// cancelled).
    Waited(Result<Option<LockGuard>, PluginError>),
}

/// Signals forwarded to CMD (and that interrupt `--wait`).
pub(crate) const FORWARDED: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// How often the main loop looks at the child even without a SIGCHLD.
const POLL: Duration = Duration::from_millis(200);

pub(crate) struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: Option<thread::JoinHandle<()>>,
    /// Stop and join the thread when dropped (see [`SignalThread::until_exit`]).
    join: bool,
}

impl SignalThread {
    pub(crate) fn start(events: Sender<Event>) -> Result<Self, CliError> {
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
        Ok(Self { handle, thread: Some(thread), join: true })
    }

    /// For a process that exits right after: dropping it then neither
    /// wakes the thread nor waits for it to end (on a busy machine that
    /// wait is a wait for a free core), the exit ends it.
    pub(crate) fn until_exit(mut self) -> Self {
        self.join = false;
        self
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        if !self.join {
            return;
        }
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: RunArgs, plugin_dirs: &[std::path::PathBuf]) -> Result<i32, CliError> {
    let config = config::read(args.config.as_deref(), &args.plugin).map_err(CliError::config)?;
    let secrets = config::secrets(&config);
    bext_locking::validate_key(&args.key).map_err(|e| CliError::usage(format!("--key: {e}")))?;
    let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
    bext_locking::validate_ttl(ttl_ms).map_err(|e| CliError::usage(format!("--ttl: {e}")))?;
    // Whole milliseconds are what the backend gets, so count with them.
    let ttl = Duration::from_millis(ttl_ms);

    // Started first, so that its start overlaps loading the plugin and
    // taking the lock; it must be ready before the command starts.
    let mut watchdog = Watchdog::spawn().map_err(CliError::error)?;
    let library = crate::resolve::load(&args.plugin, plugin_dirs).map_err(CliError::error)?;
    let verbose = |msg: &str| {
        if args.verbose {
            eprintln!("bext-lock: {msg}");
        }
    };
    let drift = library
        .describe()
        .map_err(|e| CliError::error(secrets.scrub(&e)))?
        .clock_drift_or_default();
    let plan = plan::plan(ttl, &drift, args.grace).map_err(CliError::usage)?;
    verbose(&format!(
        "plugin {} {} from {}, config {}",
        library.name(),
        library.version(),
        library.path().display(),
        config::redacted(&config)
    ));
    verbose(&format!(
        "--ttl {}: the lease counts as {} ({drift} of clock drift off); on a loss the command \
         gets SIGTERM, then SIGKILL after --grace {}, and by {} before the lease end at the latest",
        duration::show(ttl),
        duration::show(ttl - plan.drift),
        duration::show(plan.grace),
        duration::show(plan.kill_margin)
    ));
    let plugin = Arc::new(
        library
            .create_typed(&config.to_string())
            .map_err(|e| CliError::create_failed(&e, &secrets))?,
    );
    check_min_hold(&plugin, args.min_hold, &secrets)?;

    let (events_tx, events) = mpsc::channel();
    // `run` returns only for bext-lock to exit.
    let _signals = SignalThread::start(events_tx.clone())?.until_exit();
    let options = GuardOptions::default().clock_drift(drift).stop_margin(plan.stop_margin);

    let guard = match acquire(&plugin, &args, options, &events, &events_tx, &secrets) {
        Ok(Acquired::Guard(g)) => g,
        Ok(Acquired::Contended) => {
            watchdog.disarm();
            verbose(&format!(
                "`{}` is held elsewhere; not running the command (exit {})",
                args.key, args.conflict_exit_code
            ));
            return Ok(i32::from(args.conflict_exit_code));
        }
        Ok(Acquired::Interrupted(signal)) => {
            watchdog.disarm();
            return Ok(128 + signal);
        }
        Err(e) => {
            watchdog.disarm();
            return Err(e);
        }
    };
    let acquired = Instant::now();
    // Dropping the guard on this error releases the lock: no command ran.
    watchdog.ready().map_err(CliError::error)?;
    let fence = guard.fence().map(|f| format!(", fence {f}")).unwrap_or_default();
    verbose(&format!("acquired `{}` for {}{fence}", args.key, duration::show(ttl)));
    let lost_tx = events_tx.clone();
    guard.on_lost(move |lost| {
        let _ = lost_tx.send(Event::Lost(lost.clone()));
    });
    drop(events_tx);
    watchdog.kill_at(kill_deadline(&guard.lease_end(), &plan));

    if let Some(lost) = guard.lost() {
        // Lost between acquiring and starting (a very short TTL, a stall):
        // never start a command without the lock.
        watchdog.disarm();
        eprintln!(
            "bext-lock: {}; the command was not started; exit {}",
            secrets.scrub(&lost.to_string()),
            exit::LOST
        );
        return Ok(exit::LOST);
    }
    let group = (!args.foreground).then(|| watchdog.pgid());
    let mut child = match spawn(&args.command, &guard, group) {
        Ok(child) => child,
        Err(e) => {
            watchdog.disarm();
            let _ = guard.release();
            return Err(e);
        }
    };
    let target = match group {
        Some(pgid) => Target { pid: pgid, group: true, watchdog: Some(pgid) },
        None => {
            watchdog.only(child.id());
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            Target { pid, group: false, watchdog: None }
        }
    };
    let outcome = Supervisor { guard: &guard, plan: &plan, target, watchdog: &mut watchdog }
        .run(&mut child, &events);
    watchdog.disarm();

    if let Some(lost) = outcome.lost {
        let how = match outcome.status.and_then(|s| s.signal()) {
            Some(sig) => format!("was stopped by signal {sig}"),
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
    if !args.min_hold.is_zero() {
        return Ok(finish_min_hold(&plugin, guard, acquired, &args, &drift, code, &secrets));
    }
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

/// `--min-hold`: refuses (exit 5, before anything is locked) a plugin that
/// cannot keep a lock past the command, and a hold longer than any lease.
pub(crate) fn check_min_hold(
    plugin: &bext_locking_loader::FfiPlugin,
    min_hold: Duration,
    secrets: &Secrets,
) -> Result<(), CliError> {
    bext_locking::check_min_hold(plugin, min_hold).map_err(|e| {
        let code = if min_hold.as_millis() > u128::from(bext_locking::MAX_TTL_MS) {
            exit::USAGE
        } else {
            exit::UNSUPPORTED
        };
        CliError::new(code, format!("--min-hold: {}", secrets.scrub(&e)))
    })
}

/// `--min-hold` after a command that finished while holding the lock:
/// release if the hold has passed, else leave the lock held until it ends
/// (one `renew_for`) and exit at once. Returns the command's exit code; a
/// hold that could not be kept is a warning, as a failed release is.
fn finish_min_hold(
    plugin: &bext_locking_loader::FfiPlugin,
    guard: LockGuard,
    acquired: Instant,
    args: &RunArgs,
    drift: &bext_locking::ClockDrift,
    code: i32,
    secrets: &Secrets,
) -> i32 {
    let verbose = |msg: &str| {
        if args.verbose {
            eprintln!("bext-lock: {msg}");
        }
    };
    match bext_locking::finish_min_hold(plugin, guard, acquired, args.min_hold, drift) {
        Ok(bext_locking::Finished::Released) => {
            verbose(&format!("released `{}`; the command exited {code}", args.key));
            code
        }
        Ok(bext_locking::Finished::Kept(left)) => {
            verbose(&format!(
                "kept `{}` for the rest of --min-hold {} (it frees itself in {}); the command exited {code}",
                args.key,
                duration::show(args.min_hold),
                duration::show(left)
            ));
            code
        }
        Err(ReleaseError::Lost(lost)) => {
            eprintln!(
                "bext-lock: {}; the command may have run unprotected at its end; exit {}",
                secrets.scrub(&lost.to_string()),
                exit::LOST
            );
            exit::LOST
        }
        Err(ReleaseError::Backend(e)) => {
            eprintln!("bext-lock: warning: {}", secrets.scrub(&e));
            code
        }
    }
}

/// When every process of the command must be gone: the lease end less the
/// kill margin (or now, if that has passed).
pub(crate) fn kill_deadline(lease_end: &Instant, plan: &Plan) -> Instant {
    lease_end.checked_sub(plan.kill_margin).unwrap_or_else(Instant::now)
}

enum Acquired {
    Guard(LockGuard),
    Contended,
    Interrupted(i32),
}

/// Tries once, or, with `--wait`, waits for the lock: by the plugin's own
/// notification (the ABI 1.2 `lock_wait` slot) when it has one, else by
/// polling `try_lock` with jittered backoff (the loader's fallback). A
/// forwarded signal cancels the wait, which then leaves nothing behind.
fn acquire(
    plugin: &Arc<bext_locking_loader::FfiPlugin>,
    args: &RunArgs,
    options: GuardOptions,
    events: &Receiver<Event>,
    events_tx: &Sender<Event>,
    secrets: &Secrets,
) -> Result<Acquired, CliError> {
    let owner = crate::owner::for_command(&args.command);
    let Some(timeout) = args.wait else {
        return Ok(
            match crate::lock::try_once(plugin, &args.key, &owner, args.ttl, options, secrets)? {
                Some(guard) => Acquired::Guard(guard),
                None => Acquired::Contended,
            },
        );
    };
    if args.verbose {
        let how = match plugin.wait_mode() {
            WaitMode::Fifo => "the plugin's lock_wait, notified, in arrival order",
            WaitMode::Notified => "the plugin's lock_wait, notified",
            WaitMode::Polling => {
                "polling try_lock with jittered backoff: the plugin has no lock_wait"
            }
        };
        eprintln!(
            "bext-lock: waiting up to {} for `{}` by {how}",
            duration::show(timeout),
            args.key
        );
    }
    let wait = Wait::new(timeout);
    // The wait blocks in the plugin, so it runs on a thread of its own while
    // this one listens for signals, to cancel it.
    let waiter = {
        let (plugin, key, wait, done) =
            (plugin.clone(), args.key.clone(), wait.clone(), events_tx.clone());
        let ttl = args.ttl;
        thread::Builder::new()
            .name("bext-lock-wait".into())
            .spawn(move || {
                let got = LockGuard::acquire_wait(&plugin, &key, ttl, Some(&owner), &wait, options);
                let _ = done.send(Event::Waited(got));
            })
            .map_err(|e| CliError::new(exit::ERROR, format!("cannot start a thread: {e}")))?
    };
    let mut interrupted = None;
    let got = loop {
        match events.recv() {
            Ok(Event::Waited(got)) => break got,
            Ok(Event::Signal { signal, .. }) if FORWARDED.contains(&signal) => {
                if interrupted.is_none() {
                    interrupted = Some(signal);
                    wait.cancel();
                }
            }
            Ok(_) => {}
            // Every sender gone: the waiter cannot report any more.
            Err(_) => break Err(PluginError::backend("the wait thread ended")),
        }
    };
    let _ = waiter.join();
    match (got, interrupted) {
        (Ok(Some(guard)), None) => Ok(Acquired::Guard(guard)),
        (Ok(Some(guard)), Some(signal)) => {
            // Taken just as the cancel came: give it back, run nothing.
            let _ = guard.release();
            Ok(Acquired::Interrupted(signal))
        }
        (Ok(None), Some(signal)) => Ok(Acquired::Interrupted(signal)),
        (Ok(None), None) => Ok(Acquired::Contended),
        (Err(_), Some(signal)) => Ok(Acquired::Interrupted(signal)),
        (Err(e), None) => Err(crate::lock::failed(&args.key, &e, secrets)),
    }
}

/// Starts CMD, into the watchdog's process group unless `--foreground`.
pub(crate) fn spawn(
    command: &[OsString],
    guard: &LockGuard,
    group: Option<Pid>,
) -> Result<Child, CliError> {
    let (program, rest) = command.split_first().ok_or_else(|| CliError::usage("no command"))?;
    let mut cmd = Command::new(program);
    if let Some(pgid) = group {
        // A process group of its own (led by the watchdog), so a lost lock
        // stops everything CMD started, not just CMD (a shell's children
        // would run on), and so does bext-lock's death.
        cmd.process_group(pgid.as_raw());
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

pub(crate) struct Outcome {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) lost: Option<LockLost>,
}

/// Where signals go: CMD's process group (the default), or CMD alone
/// (`--foreground`).
pub(crate) struct Target {
    /// The process group (the watchdog's pid), or CMD's pid.
    pub(crate) pid: Pid,
    pub(crate) group: bool,
    /// The watchdog, a member of the group that is not the command's.
    pub(crate) watchdog: Option<Pid>,
}

impl Target {
    fn send(&self, signal: i32) {
        let Ok(sig) = Signal::try_from(signal) else { return };
        // CMD may have just exited (not yet reaped): nothing to do then.
        let _ = if self.group { killpg(self.pid, sig) } else { kill(self.pid, sig) };
    }

    /// Whether a process of the command is left in its group.
    fn group_alive(&self) -> bool {
        self.group && others_in_group(self.pid.as_raw(), self.watchdog.map(Pid::as_raw))
    }
}

/// Whether a live (not zombie) process other than `except` is in process
/// group `pgid`, from `/proc`.
fn others_in_group(pgid: i32, except: Option<i32>) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        // No /proc: count the watchdog as the command's, erring on the side
        // of killing.
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    dir.flatten().any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        if Some(pid) == except {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// Waits for CMD, forwards signals, and enforces the lease on it.
pub(crate) struct Supervisor<'a> {
    pub(crate) guard: &'a LockGuard,
    pub(crate) plan: &'a Plan,
    pub(crate) target: Target,
    pub(crate) watchdog: &'a mut Watchdog,
}

impl Supervisor<'_> {
    /// Waits for the child, forwarding signals; on loss of the lock sends
    /// SIGTERM at once and SIGKILL at `min(now + grace, lease end − kill
    /// margin)`, or SIGKILL at once after a pause.
    ///
    /// Only this thread reaps the child, and it signals the child only after
    /// `try_wait` saw it still running: an unreaped child keeps its pid, so a
    /// signal cannot hit a process that reused it. (The group's id is the
    /// watchdog's pid, which bext-lock reaps only at its very end.)
    pub(crate) fn run(self, child: &mut Child, events: &Receiver<Event>) -> Outcome {
        // Often enough that the watchdog hears of each renewal long before
        // the previous lease would end (a renewal comes a third of the way in).
        let poll = POLL.min(self.plan.ttl / 10).max(Duration::from_millis(1));
        let mut lost: Option<LockLost> = None;
        let mut kill_at: Option<Instant> = None;
        let mut told = self.guard.lease_end();
        loop {
            let timeout = match kill_at {
                Some(at) => at.saturating_duration_since(Instant::now()).min(poll),
                None => poll,
            };
            let event = events.recv_timeout(timeout);
            if lost.is_none() {
                let lease_end = self.guard.lease_end();
                if lease_end != told {
                    told = lease_end;
                    self.watchdog.kill_at(kill_deadline(&lease_end, self.plan));
                }
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    // A loss the callback has not delivered yet still counts.
                    if lost.is_none() {
                        lost = self.guard.lost();
                    }
                    if lost.is_some() {
                        self.finish_group(kill_at);
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
                    if self.target.group || !from_kernel {
                        self.target.send(signal);
                    }
                }
                Ok(Event::Signal { .. }) => {} // SIGCHLD: looked at above
                Ok(Event::Waited(_)) => {}     // sent once, before the command starts
                Ok(Event::Lost(l)) => {
                    if lost.is_none() {
                        kill_at = self.on_loss(&l);
                        lost = Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Cannot happen while the guard lives; never spin if it does.
                Err(RecvTimeoutError::Disconnected) => thread::sleep(timeout),
            }
            if lost.is_none() {
                // The guard's clock says so even if its thread is late.
                if let Some(l) = self.guard.lost() {
                    kill_at = self.on_loss(&l);
                    lost = Some(l);
                }
            }
            if kill_at.is_some_and(|at| Instant::now() >= at) {
                eprintln!("bext-lock: the command is still running; SIGKILL");
                self.target.send(Signal::SIGKILL as i32);
                kill_at = None;
            }
        }
    }

    /// Signals the command on a loss; returns when to SIGKILL it.
    fn on_loss(&self, l: &LockLost) -> Option<Instant> {
        let now = Instant::now();
        let by = kill_deadline(&l.lease_end, self.plan);
        let whom = match self.target.group {
            true => format!("the command's process group {}", self.target.pid),
            false => format!("the command (pid {})", self.target.pid),
        };
        if l.cause == LossCause::Paused || by <= now {
            // bext-lock did not run for a while: the lease may be over, and
            // nothing watched the command meanwhile.
            eprintln!("bext-lock: {l}; SIGKILL to {whom} at once");
            self.target.send(Signal::SIGKILL as i32);
            return None;
        }
        let at = (now + self.plan.grace).min(by);
        eprintln!(
            "bext-lock: {l}; SIGTERM to {whom}, SIGKILL in {} (by the lease end at the latest)",
            duration::show(at - now)
        );
        self.target.send(SIGTERM);
        Some(at)
    }

    /// After a loss, CMD has exited but what it started may not have: give
    /// the rest of its process group until the SIGKILL was due, then SIGKILL
    /// it.
    fn finish_group(&self, kill_at: Option<Instant>) {
        let until = kill_at.unwrap_or_else(Instant::now);
        while self.target.group_alive() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        if self.target.group_alive() {
            eprintln!("bext-lock: processes the command started are still running; SIGKILL");
            self.target.send(Signal::SIGKILL as i32);
        }
        // Exit only once they are gone (SIGKILL takes effect at once unless
        // a process is stuck in the kernel, e.g. on a dead NFS mount).
        let until = Instant::now() + Duration::from_secs(2);
        while self.target.group_alive() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The exit code a shell would report: the status, or 128 + the signal.
pub(crate) fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => exit::ERROR,
    }
}
