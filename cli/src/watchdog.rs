//! The watchdog: a small process that kills the command if `bext-lock`
//! itself dies or stops, so the command never runs on without the lock.
//!
//! `bext-lock run` starts it (the same binary, re-executed with a hidden
//! argument) before it takes the lock. The watchdog leads a process group
//! of its own and the command is started *into that group*, so:
//!
//! * the group cannot disappear or be reused while the watchdog lives (it
//!   is the group's leader), and the command is in it from its first
//!   instruction: there is no moment when it runs unwatched;
//! * `bext-lock` holds the only write end of a pipe to the watchdog's
//!   stdin. When `bext-lock` dies in any way (SIGKILL, the OOM killer, a
//!   crash), the kernel closes it, the watchdog reads end-of-file and
//!   SIGKILLs the whole group at once, itself included;
//! * after every confirmed renewal `bext-lock` tells it the instant the
//!   command must be gone by (the lease end less the kill margin) on
//!   `CLOCK_MONOTONIC`. If that instant passes without a newer one,
//!   `bext-lock` is stopped (SIGSTOP, Ctrl-Z) or starved, and the watchdog
//!   SIGKILLs the group then;
//! * when the command is done, `bext-lock` says `done` and the watchdog
//!   exits without touching anything.
//!
//! The watchdog ignores SIGINT, SIGTERM, SIGHUP, SIGQUIT and the terminal
//! stop signals, which reach it as a member of the group. With
//! `--foreground` the command stays in `bext-lock`'s group and the
//! watchdog is told its pid: then it can kill the command alone, once
//! told, not what the command started.
//!
//! Not covered: a process that leaves the group (`setsid`, `setpgid`, a
//! shell with job control) and a watchdog killed together with `bext-lock`
//! (`kill -9` of both; their common ancestor's cgroup being killed kills the
//! command too).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{Pid, getpgrp, getppid};

/// The hidden first argument that makes `bext-lock` a watchdog.
pub const ARG: &str = "__bext-lock-watchdog";

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock `Instant` uses, and the
/// same for every process on the host.
fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always there");
    (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
}

/// `at` on `CLOCK_MONOTONIC`. The clock is read before `Instant::now()`,
/// so the answer is never later than the truth.
pub fn to_monotonic_ns(at: Instant) -> u64 {
    let ns = monotonic_ns();
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => ns.saturating_add(ahead.as_nanos() as u64),
        None => ns.saturating_sub((now - at).as_nanos() as u64),
    }
}

/// The `Instant` of a `CLOCK_MONOTONIC` time. `Instant::now()` is read
/// first, so the answer is never later than the truth.
fn from_monotonic_ns(ns: u64) -> Instant {
    let now = Instant::now();
    let clock = monotonic_ns();
    if ns >= clock {
        now + Duration::from_nanos(ns - clock)
    } else {
        now.checked_sub(Duration::from_nanos(clock - ns)).unwrap_or(now)
    }
}

/// `bext-lock`'s side: the watchdog process and the pipe to it.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout until it has said `ready`.
    starting: Option<std::process::ChildStdout>,
    warned: bool,
}

impl Watchdog {
    /// Starts the watchdog in a process group of its own, without waiting
    /// for it: its start (a second
    /// process of this binary) then overlaps loading the plugin and taking
    /// the lock. Call [`Watchdog::ready`] before starting the command.
    pub fn spawn() -> Result<Self, String> {
        // /proc/self/exe is this very binary, even if the file was replaced
        // since (an upgrade while bext-lock runs).
        let mut child = Command::new("/proc/self/exe")
            .arg0("bext-lock")
            .arg(ARG)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog process: {e}"))?;
        let starting = child.stdout.take();
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, starting, warned: false })
    }

    /// Waits until the watchdog ignores the signals that will reach it (at
    /// once when it already said so).
    pub fn ready(&mut self) -> Result<(), String> {
        let Some(stdout) = self.starting.take() else { return Ok(()) };
        let mut line = String::new();
        let ready = BufReader::new(stdout).read_line(&mut line);
        if !(ready.is_ok() && line.trim() == "ready") {
            let _ = self.child.kill();
            return Err(format!("the watchdog process did not start: {ready:?} {line:?}"));
        }
        Ok(())
    }

    /// The watchdog's process group, which the command joins.
    pub fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    fn say(&mut self, line: &str) {
        let sent = match self.stdin.as_mut() {
            Some(w) => writeln!(w, "{line}").and_then(|()| w.flush()),
            None => return,
        };
        // `done` to a watchdog that already killed the command (bext-lock
        // was stopped past the lease) finds it gone: nothing to say then.
        if let Err(e) = sent {
            if !self.warned && line != "done" {
                eprintln!(
                    "bext-lock: warning: the watchdog process is gone ({e}); if bext-lock dies now, \
                     its command runs on"
                );
                self.warned = true;
            }
        }
    }

    /// The command must be gone by `at`, unless told a later instant.
    pub fn kill_at(&mut self, at: Instant) {
        self.say(&format!("kill-at {}", to_monotonic_ns(at)));
    }

    /// Kill this process alone rather than the watchdog's group
    /// (`--foreground`).
    pub fn only(&mut self, pid: u32) {
        self.say(&format!("pid {pid}"));
    }

    /// The command is done: the watchdog exits without killing anything.
    pub fn disarm(mut self) {
        self.say("done");
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Without `done` first (a panic), the end of the pipe makes the
        // watchdog kill the group, as if bext-lock had died.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

enum Message {
    KillAt(Instant),
    Pid(Pid),
    Done,
    End,
}

fn parse(line: &str) -> Option<Message> {
    let mut words = line.split_whitespace();
    match (words.next()?, words.next()) {
        ("kill-at", Some(ns)) => ns.parse().ok().map(|ns| Message::KillAt(from_monotonic_ns(ns))),
        ("pid", Some(pid)) => pid.parse().ok().map(|p| Message::Pid(Pid::from_raw(p))),
        ("done", None) => Some(Message::Done),
        _ => None,
    }
}

/// The watchdog's side: runs until `done`, the end of its stdin, or the
/// last deadline it was told. Returns the exit status.
pub fn serve() -> i32 {
    let parent = getppid();
    // Started as /proc/self/exe, it would show as `exe` in ps and top.
    let _ = nix::sys::prctl::set_name(c"bext-lock-watch");
    let ignored = Arc::new(AtomicBool::new(false));
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        if let Err(e) = signal_hook::flag::register(sig as i32, Arc::clone(&ignored)) {
            eprintln!("bext-lock: watchdog: cannot handle {sig}: {e}");
            return 1;
        }
    }
    println!("ready");
    if std::io::stdout().flush().is_err() {
        return 1;
    }
    let (tx, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(m) = parse(&line) {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Message::End);
    });
    let mut kill_at: Option<Instant> = None;
    let mut only: Option<Pid> = None;
    let mut armed = false;
    loop {
        let next = match kill_at {
            Some(at) => messages.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => messages.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Message::KillAt(at)) => {
                kill_at = Some(at);
                armed = true;
            }
            Ok(Message::Pid(pid)) => only = Some(pid),
            Ok(Message::Done) => return 0,
            Ok(Message::End) | Err(RecvTimeoutError::Disconnected) => {
                if armed {
                    stop(only, &format!("bext-lock (pid {parent}) is gone while its command ran"));
                }
                return 0;
            }
            Err(RecvTimeoutError::Timeout) => {
                stop(
                    only,
                    &format!(
                        "the lease ends now and bext-lock (pid {parent}) has not confirmed a \
                         renewal: it is stopped or starved"
                    ),
                );
                // Wait for bext-lock to say it is done, or to die.
                kill_at = None;
            }
        }
    }
}

fn stop(only: Option<Pid>, why: &str) {
    match only {
        Some(pid) => {
            eprintln!("bext-lock: watchdog: {why}; SIGKILL to the command (pid {pid})");
            let _ = kill(pid, Signal::SIGKILL);
        }
        None => {
            let group = getpgrp();
            eprintln!("bext-lock: watchdog: {why}; SIGKILL to the command's process group {group}");
            // This process is in the group too: this is its last act.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_conversions_never_move_a_deadline_later() {
        let at = Instant::now() + Duration::from_secs(5);
        let back = from_monotonic_ns(to_monotonic_ns(at));
        assert!(back <= at, "{:?} later", back - at);
        assert!(at - back < Duration::from_millis(50), "{:?} earlier", at - back);
        let past = Instant::now() - Duration::from_secs(1);
        assert!(from_monotonic_ns(to_monotonic_ns(past)) <= past);
    }

    #[test]
    fn messages_parse() {
        assert!(matches!(parse("done"), Some(Message::Done)));
        assert!(matches!(parse("pid 42"), Some(Message::Pid(p)) if p.as_raw() == 42));
        assert!(matches!(parse("kill-at 123"), Some(Message::KillAt(_))));
        assert!(parse("kill-at soon").is_none());
        assert!(parse("").is_none());
        assert!(parse("done now").is_none());
    }
}
