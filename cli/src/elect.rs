//! `bext-lock elect`: campaign for a key, run a command while leader, resign
//! when it exits; with `--restart`, campaign again.
//!
//! Each term is a `bext-lock run` that waits for the lock: the same guard,
//! watchdog and kill rules (see `run.rs`, `plan.rs`, `watchdog.rs`), so the
//! command is stopped before the lease can pass to the next leader. The
//! campaign waits with `lock_wait` (notified where the plugin has it,
//! polled otherwise) and a signal ends it at once. The term is the lock's
//! fence, given to the command as `BEXT_LOCK_FENCE`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bext_locking::redact::Secrets;
use bext_locking::{ErrorKind, GuardOptions, LockGuard, ReleaseError, Wait};
use nix::unistd::Pid;

use crate::plan::{self, Plan};
use crate::run::{self, Event, FORWARDED, Outcome, SignalThread, Supervisor, Target};
use crate::watchdog::Watchdog;
use crate::{CliError, config, duration, exit};

/// What `elect` was asked to do.
pub struct ElectArgs {
    pub plugin: String,
    pub key: String,
    pub ttl: Duration,
    pub config: Option<String>,
    pub grace: Option<Duration>,
    pub restart: bool,
    pub allow_unfenced: bool,
    pub foreground: bool,
    pub verbose: bool,
    pub command: Vec<OsString>,
}

/// A term shorter than this is followed by a pause of this long before
/// campaigning again under `--restart`: a command that fails at once must
/// not turn into a loop that hammers the backend.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// A campaign waits this long at most, then starts over (nothing changes
/// for the user: it is one more wait).
const CAMPAIGN_SLICE: Duration = Duration::from_secs(3600);

/// Signals, and the campaign they cancel: a relay thread passes every event
/// on to the supervisor's channel and, for a forwarded signal, remembers it
/// and cancels the campaign in flight.
struct Relay {
    signal: Arc<AtomicI32>,
    campaign: Arc<Mutex<Option<Wait>>>,
}

impl Relay {
    fn start(from: Receiver<Event>, to: Sender<Event>) -> Self {
        let signal = Arc::new(AtomicI32::new(0));
        let campaign: Arc<Mutex<Option<Wait>>> = Arc::default();
        let (sig, camp) = (Arc::clone(&signal), Arc::clone(&campaign));
        thread::spawn(move || {
            for event in from {
                if let Event::Signal { signal, .. } = &event {
                    if FORWARDED.contains(signal) {
                        sig.store(*signal, Ordering::SeqCst);
                        if let Some(w) =
                            camp.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
                        {
                            w.cancel();
                        }
                    }
                }
                if to.send(event).is_err() {
                    return;
                }
            }
        });
        Self { signal, campaign }
    }

    /// The forwarded signal received so far, if any.
    fn interrupted(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// Makes `wait` the campaign a signal cancels (cancelled at once if a
    /// signal came already).
    fn set_campaign(&self, wait: Option<Wait>) {
        let mut slot = self.campaign.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = &wait {
            if self.interrupted().is_some() {
                w.cancel();
            }
        }
        *slot = wait;
    }

    /// Sleeps `d`, or less if a signal comes.
    fn pause(&self, d: Duration) {
        let wait = Wait::new(d);
        self.set_campaign(Some(wait.clone()));
        wait.sleep(d);
        self.set_campaign(None);
    }
}

/// How one term ended.
enum Term {
    /// The command exited with this code while leading; we resigned.
    Exited(i32),
    /// The leadership was lost while the command ran (it was stopped).
    Lost,
}

/// Campaigns, leads, resigns; returns the exit code.
pub fn elect(args: ElectArgs, plugin_dirs: &[PathBuf]) -> Result<i32, CliError> {
    let config = config::read(args.config.as_deref(), &args.plugin).map_err(CliError::config)?;
    let secrets = config::secrets(&config);
    bext_locking::validate_key(&args.key).map_err(|e| CliError::usage(format!("--key: {e}")))?;
    let ttl_ms = crate::millis(args.ttl);
    bext_locking::validate_ttl(ttl_ms).map_err(|e| CliError::usage(format!("--ttl: {e}")))?;
    let ttl = Duration::from_millis(ttl_ms);

    let library = crate::resolve::load(&args.plugin, plugin_dirs).map_err(CliError::error)?;
    let described = library.describe().map_err(|e| CliError::error(secrets.scrub(&e)))?;
    if !described.fencing && !args.allow_unfenced {
        return Err(unfenced(library.name()));
    }
    let drift = described.clock_drift_or_default();
    let plan = plan::plan(ttl, &drift, args.grace).map_err(CliError::usage)?;
    let options = GuardOptions::default().clock_drift(drift).stop_margin(plan.stop_margin);
    options.check(ttl).map_err(CliError::usage)?;
    let plugin = Arc::new(
        library
            .create_typed(&config.to_string())
            .map_err(|e| CliError::create_failed(&e, &secrets))?,
    );

    let (signal_tx, signal_rx) = mpsc::channel();
    let _signals = SignalThread::start(signal_tx)?;
    let (events_tx, events) = mpsc::channel();
    let relay = Relay::start(signal_rx, events_tx.clone());
    let owner = crate::owner::for_command(&args.command);
    let say = |msg: &str| {
        if args.verbose {
            eprintln!("bext-lock: {msg}");
        }
    };

    loop {
        if let Some(sig) = relay.interrupted() {
            return Ok(128 + sig);
        }
        let mut watchdog = Watchdog::spawn().map_err(CliError::error)?;
        say(&format!("campaigning for `{}`", args.key));
        let wait = Wait::new(CAMPAIGN_SLICE);
        relay.set_campaign(Some(wait.clone()));
        let got =
            LockGuard::acquire_wait(&plugin, &args.key, ttl, Some(&owner), &wait, options.clone());
        relay.set_campaign(None);
        let guard = match got {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                watchdog.disarm_and_reap();
                continue; // a signal (seen at the top) or a slice that ran out
            }
            Err(e) => {
                watchdog.disarm_and_reap();
                return Err(campaign_failed(&args.key, &e, &secrets));
            }
        };
        if guard.fence().is_none() && !args.allow_unfenced {
            watchdog.disarm_and_reap();
            let _ = guard.release();
            return Err(unfenced(library.name()));
        }
        // Events of an earlier term (its loss, SIGCHLD) are not this one's;
        // a signal among them is kept by the relay.
        while events.try_recv().is_ok() {}
        let started = Instant::now();
        let term = lead(guard, &args, &plan, &mut watchdog, &events, &events_tx, &secrets);
        watchdog.disarm_and_reap();
        let code = match term? {
            Term::Lost => exit::LOST,
            Term::Exited(code) => code,
        };
        if !args.restart {
            return Ok(code);
        }
        // Under --restart a signal means "stop being a candidate": the
        // command got it and has exited; say which signal ended us.
        if let Some(sig) = relay.interrupted() {
            return Ok(128 + sig);
        }
        if started.elapsed() < RESTART_PAUSE {
            relay.pause(RESTART_PAUSE);
        }
    }
}

/// One term: the command runs while we lead; resign when it exits.
#[allow(clippy::too_many_arguments)] // the pieces of `run` one term needs
fn lead(
    guard: LockGuard,
    args: &ElectArgs,
    plan: &Plan,
    watchdog: &mut Watchdog,
    events: &Receiver<Event>,
    events_tx: &Sender<Event>,
    secrets: &Secrets,
) -> Result<Term, CliError> {
    watchdog.ready().map_err(CliError::error)?;
    let term = guard.fence().map(|f| format!(" as term {f}")).unwrap_or_default();
    if args.verbose {
        eprintln!("bext-lock: leading `{}`{term} for {}", args.key, duration::show(plan.ttl));
    }
    let lost_tx = events_tx.clone();
    guard.on_lost(move |lost| {
        let _ = lost_tx.send(Event::Lost(lost.clone()));
    });
    watchdog.kill_at(run::kill_deadline(&guard.lease_end(), plan));
    if let Some(lost) = guard.lost() {
        eprintln!("bext-lock: {}; the command was not started", secrets.scrub(&lost.to_string()));
        return Ok(Term::Lost);
    }
    let group = (!args.foreground).then(|| watchdog.pgid());
    let mut child = match run::spawn(&args.command, &guard, group) {
        Ok(child) => child,
        Err(e) => {
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
    let Outcome { status, lost } =
        Supervisor { guard: &guard, plan, target, watchdog }.run(&mut child, events);
    if let Some(lost) = lost {
        eprintln!(
            "bext-lock: the command was stopped: the leadership of `{}` was lost ({}); exit {}",
            args.key,
            secrets.scrub(&lost.reason),
            exit::LOST
        );
        return Ok(Term::Lost);
    }
    let code = status.map(run::status_code).unwrap_or(exit::ERROR);
    match guard.release() {
        Ok(()) => {
            if args.verbose {
                eprintln!("bext-lock: resigned `{}`; the command exited {code}", args.key);
            }
            Ok(Term::Exited(code))
        }
        Err(ReleaseError::Lost(lost)) => {
            eprintln!(
                "bext-lock: {}; the command may have run unprotected at its end; exit {}",
                secrets.scrub(&lost.to_string()),
                exit::LOST
            );
            Ok(Term::Lost)
        }
        Err(ReleaseError::Backend(e)) => {
            eprintln!(
                "bext-lock: warning: could not resign `{}` ({}); the next leader waits for the TTL",
                args.key,
                secrets.scrub(&e)
            );
            Ok(Term::Exited(code))
        }
    }
}

/// The refusal of a backend without fences.
fn unfenced(plugin: &str) -> CliError {
    CliError::new(
        exit::UNSUPPORTED,
        format!(
            "plugin `{plugin}` does not fence its locks: an election on it has no term that rises \
             with each leader, so nothing can refuse the late writes of a leader that was paused \
             past its lease; give --allow-unfenced to lead without that protection"
        ),
    )
}

/// A campaign that failed: a request the plugin refuses is bad usage, any
/// other error the backend's.
fn campaign_failed(key: &str, e: &bext_locking::PluginError, secrets: &Secrets) -> CliError {
    let code = match e.kind {
        ErrorKind::InvalidArgument => exit::USAGE,
        ErrorKind::Unsupported => exit::UNSUPPORTED,
        _ => exit::BACKEND,
    };
    CliError::new(code, format!("cannot campaign for `{key}`: {}", secrets.scrub(&e.message)))
}
