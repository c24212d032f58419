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

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::time::TimeSpec;
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
    starting: Option<ChildStdout>,
    warned: bool,
    /// Told a deadline: from then on, the end of the pipe kills the group.
    armed: bool,
}

impl Watchdog {
    /// Starts the watchdog in a process group of its own, without waiting
    /// for it to be ready: its start (a second process of this binary) then
    /// overlaps loading the plugin and taking the lock. Call
    /// [`Watchdog::ready`] before starting the command.
    ///
    /// Started from this thread: from a thread of its own the start would
    /// not stop this one (starting a process stops the calling thread until
    /// the new program runs, most of a millisecond here), but on a busy
    /// machine `bext-lock run` measured slower that way, not faster.
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
        Ok(Self { child, stdin, starting, warned: false, armed: false })
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
        self.armed = true;
        self.say(&format!("kill-at {}", to_monotonic_ns(at)));
    }

    /// Kill this process alone rather than the watchdog's group
    /// (`--foreground`).
    pub fn only(&mut self, pid: u32) {
        self.say(&format!("pid {pid}"));
    }

    /// The command is done: the watchdog exits without killing anything.
    /// Before it was armed (the lock was not taken) not even `done` is
    /// needed: the end of the pipe (when this value is dropped) tells an
    /// unarmed watchdog to exit. Nothing waits for it to exit: it does so at
    /// once, and the system reaps it once `bext-lock` has exited. Until then
    /// it is a zombie child, so a process that goes on to start more
    /// watchdogs uses [`Watchdog::disarm_and_reap`] instead.
    pub fn disarm(mut self) {
        if self.armed {
            self.say("done");
        }
        self.armed = false;
    }

    /// [`Watchdog::disarm`], then waits for the watchdog to exit (at once,
    /// once told) and reaps it.
    pub fn disarm_and_reap(mut self) {
        if self.armed {
            self.say("done");
        }
        self.armed = false;
        self.stdin.take();
        self.starting.take();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Without `done` first (an error or a panic while the command may
        // run), the end of the pipe makes the watchdog kill the group, as
        // if bext-lock had died; wait until it has.
        self.stdin.take();
        if self.armed {
            let _ = self.child.wait();
        }
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
    // Unbuffered: `ppoll` must see every byte not yet handled.
    let mut input = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("bext-lock: watchdog: cannot read its pipe: {e}");
            return 1;
        }
    };
    // Fails when bext-lock exited before it looked (it did not take the
    // lock, so there is nothing to guard): exit quietly then.
    let mut out = std::io::stdout();
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    let mut lines = Lines::default();
    let mut kill_at: Option<Instant> = None;
    let mut only: Option<Pid> = None;
    let mut armed = false;
    loop {
        let next = match lines.next_message() {
            Some(m) => Some(m),
            None => lines.wait(&mut input, kill_at),
        };
        match next {
            Some(Message::KillAt(at)) => {
                kill_at = Some(at);
                armed = true;
            }
            Some(Message::Pid(pid)) => only = Some(pid),
            Some(Message::Done) => return 0,
            Some(Message::End) => {
                if armed {
                    stop(only, &format!("bext-lock (pid {parent}) is gone while its command ran"));
                }
                return 0;
            }
            None => {
                if kill_at.is_some_and(|at| Instant::now() >= at) {
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
}

/// The watchdog's input: what it read of its pipe and not yet handled.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

/// More than any message: a line this long without its end is dropped.
const MAX_LINE: usize = 4096;

impl Lines {
    /// The next whole message read already (lines that are not one are
    /// skipped).
    fn next_message(&mut self) -> Option<Message> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if let Some(m) = parse(&String::from_utf8_lossy(&line)) {
                return Some(m);
            }
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
        None
    }

    /// Waits for more input until `until`: [`Message::End`] at the end of
    /// the pipe, `None` after new bytes (see [`Lines::next_message`]), a
    /// signal, or the deadline.
    fn wait(&mut self, input: &mut File, until: Option<Instant>) -> Option<Message> {
        let timeout = until.map(|at| TimeSpec::from(at.saturating_duration_since(Instant::now())));
        if timeout.is_some_and(|t| t == TimeSpec::from(Duration::ZERO)) {
            return None;
        }
        let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, timeout, None) {
            Ok(0) | Err(Errno::EINTR) => return None,
            Ok(_) => {}
            Err(_) => return Some(Message::End),
        }
        let mut chunk = [0u8; 512];
        match input.read(&mut chunk) {
            Ok(0) => Some(Message::End),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Err(_) => Some(Message::End),
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
