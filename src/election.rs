//! Leader election on one key: campaign, lead, resign, and watch who leads.
//!
//! An [`Election`] is a lock key that candidates wait for. Whoever holds it
//! leads; its **term** is the lock's fence, which the backend raises with
//! every acquisition, so terms strictly rise across leaders and a resource
//! that remembers the highest term it saw refuses a deposed leader's late
//! writes. Leading is a [`LockGuard`]: it renews in the background and says
//! the leadership is lost *before* the lease can pass to the next leader
//! (at the guard's stop margin), so a leader that stops when told never
//! overlaps the next one.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use bext_locking::{Election, LockWait};
//! # fn serve<P: LockWait + 'static>(plugin: Arc<P>) -> Result<(), Box<dyn std::error::Error>> {
//! let election = Election::new(plugin, "services/scheduler", Duration::from_secs(10))
//!     .candidate("node-1");
//! loop {
//!     let Some(leadership) = election.campaign(Duration::from_secs(60))? else { continue };
//!     let term = leadership.term().expect("a fencing backend");
//!     let lost = leadership.lost_channel();
//!     // ... lead, passing `term` to what you write, until `lost` fires or the work is done ...
//! # drop((term, lost));
//!     leadership.resign()?;
//! }
//! # }
//! ```
//!
//! Without fences there is no term to pass on, and nothing stops a paused
//! leader's late writes: [`Election::campaign`] refuses such a backend
//! unless [`Election::allow_unfenced`] says the caller knows.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::guard::{GuardOptions, LockGuard, LockLost, ReleaseError};
use crate::{ErrorKind, LockInfo, LockWait, PluginError, Wait};

/// An election on one key of one plugin. Cheap to share: campaigns and
/// observers of one `Election` are independent.
pub struct Election<P: LockWait + 'static> {
    plugin: Arc<P>,
    key: String,
    ttl: Duration,
    candidate: Option<String>,
    options: GuardOptions,
    allow_unfenced: bool,
}

impl<P: LockWait + 'static> Election<P> {
    /// An election on `key`, each leader's lease lasting `ttl` (renewed
    /// while it leads): if a leader dies, the next one leads at most `ttl`
    /// later.
    pub fn new(plugin: Arc<P>, key: impl Into<String>, ttl: Duration) -> Self {
        Self {
            plugin,
            key: key.into(),
            ttl,
            candidate: None,
            options: GuardOptions::default(),
            allow_unfenced: false,
        }
    }

    /// The name this candidate leads under: the `owner` that
    /// [`leader`](Self::leader) and observers see, on plugins that store
    /// owners (at most [`MAX_OWNER_BYTES`](crate::MAX_OWNER_BYTES)).
    pub fn candidate(mut self, name: impl Into<String>) -> Self {
        self.candidate = Some(name.into());
        self
    }

    /// How a leadership renews and how early it is told of a loss (see
    /// [`GuardOptions`]; take the clock drift from the plugin's `describe`).
    pub fn options(mut self, options: GuardOptions) -> Self {
        self.options = options;
        self
    }

    /// Lead on a backend whose locks carry no fence. There is then no term,
    /// and a leader that was paused past its lease can act after the next
    /// one started; only the guard's loss signal stands between them.
    pub fn allow_unfenced(mut self, allow: bool) -> Self {
        self.allow_unfenced = allow;
        self
    }

    /// The key the election runs on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits up to `timeout` to become leader (`Ok(None)`: someone else
    /// still leads). A notified wait on plugins with `lock_wait`, polled
    /// otherwise. `Err`: the backend failed, or it gave an unfenced lock
    /// and [`allow_unfenced`](Self::allow_unfenced) was not set (the lock
    /// is then released at once).
    pub fn campaign(&self, timeout: Duration) -> Result<Option<Leadership>, PluginError> {
        self.campaign_until(&Wait::new(timeout))
    }

    /// [`campaign`](Self::campaign) with a [`Wait`] another thread may
    /// cancel (`Ok(None)` then too: check [`Wait::is_cancelled`]).
    pub fn campaign_until(&self, wait: &Wait) -> Result<Option<Leadership>, PluginError> {
        let Some(guard) = LockGuard::acquire_wait(
            &self.plugin,
            &self.key,
            self.ttl,
            self.candidate.as_deref(),
            wait,
            self.options.clone(),
        )?
        else {
            return Ok(None);
        };
        if guard.fence().is_none() && !self.allow_unfenced {
            let _ = guard.release();
            return Err(PluginError::unsupported(unfenced_reason(self.plugin.name())));
        }
        Ok(Some(Leadership { guard }))
    }

    /// Who leads now, by `inspect` (`None`: nobody). Needs a plugin with
    /// `inspect`; others answer [`ErrorKind::Unsupported`].
    pub fn leader(&self) -> Result<Option<Leader>, PluginError> {
        self.plugin.inspect(&self.key).map(Leader::from_info)
    }

    /// Leader changes, looked up every tenth of the TTL (between 50 ms and
    /// 1 s): see [`observe_every`](Self::observe_every).
    pub fn observe(&self) -> Observer {
        self.observe_every((self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)))
    }

    /// Leader changes, by `inspect` every `interval`: the current leader
    /// (or `None`) first, then one item each time the leader or its term
    /// changes. A change shorter than `interval` may be missed (a resign
    /// and a new term in between shows as the new term); nothing is ever
    /// reported that did not happen. A failing `inspect` is reported once
    /// as `Err` per failing stretch, and the observer goes on; a plugin
    /// that cannot inspect ends it after that error. Dropping the
    /// [`Observer`] stops it.
    pub fn observe_every(&self, interval: Duration) -> Observer {
        let (tx, rx) = mpsc::channel();
        let stop = Wait::new(Duration::from_secs(86_400 * 365 * 100));
        let (plugin, key, until) = (Arc::clone(&self.plugin), self.key.clone(), stop.clone());
        let interval = interval.max(Duration::from_millis(1));
        let thread = thread::Builder::new()
            .name("bext-lock-observe".into())
            .spawn(move || {
                let mut last: Option<Seen> = None;
                loop {
                    let now = plugin.inspect(&key).map(Leader::from_info);
                    let seen = match &now {
                        Ok(l) => Ok(l.as_ref().map(|l| (l.owner.clone(), l.term))),
                        Err(_) => Err(()),
                    };
                    let end = matches!(&now, Err(e) if e.kind == ErrorKind::Unsupported);
                    if last.as_ref() != Some(&seen) {
                        last = Some(seen);
                        if tx.send(now).is_err() {
                            return;
                        }
                    }
                    if end || !until.sleep(interval) {
                        return;
                    }
                }
            })
            .expect("spawning the observer thread");
        Observer { rx, stop, thread: Some(thread) }
    }
}

/// What an observer compares to tell a change: the leader's name and term
/// (not its expiry, which every renewal moves), or a failure.
type Seen = Result<Option<(Option<String>, Option<u64>)>, ()>;

fn unfenced_reason(plugin: &str) -> String {
    format!(
        "plugin `{plugin}` gave a lock without a fence: an election on it has no term that rises \
         with each leader, so nothing can refuse a deposed (paused) leader's late writes; allow \
         it explicitly to lead without fencing"
    )
}

/// Who leads, as `inspect` says (by the backend's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's candidate name, on plugins that store owners.
    pub owner: Option<String>,
    /// The leader's term (its lock's fence), on fencing backends.
    pub term: Option<u64>,
    /// How long its lease still runs, if the plugin says.
    pub expires_in: Option<Duration>,
}

impl Leader {
    fn from_info(info: LockInfo) -> Option<Self> {
        info.held.then(|| Leader {
            owner: info.owner,
            term: info.fence,
            expires_in: info.expires_in_ms.map(Duration::from_millis),
        })
    }
}

/// Leading: the guarded lock of a won campaign. Dropping it resigns.
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// This leader's term: the lock's fence (rises with every leader).
    /// `None` only on an unfenced backend that was allowed.
    pub fn term(&self) -> Option<u64> {
        self.guard.fence()
    }

    /// The guard holding the leadership: [`LockGuard::is_lost`],
    /// [`LockGuard::wait_lost`], [`LockGuard::stop_deadline`] and the rest.
    pub fn guard(&self) -> &LockGuard {
        &self.guard
    }

    /// Whether the leadership is lost (at the latest the stop margin before
    /// the lease could pass to another leader).
    pub fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    /// A channel that receives one [`LockLost`] when the leadership is lost.
    pub fn lost_channel(&self) -> Receiver<LockLost> {
        self.guard.lost_channel()
    }

    /// Steps down: stops renewing and releases, so a waiting candidate
    /// takes over at once. Fails with [`ReleaseError::Lost`] if the
    /// leadership had been lost already.
    pub fn resign(self) -> Result<(), ReleaseError> {
        self.guard.release()
    }

    /// The guard, to manage the lock directly.
    pub fn into_guard(self) -> LockGuard {
        self.guard
    }
}

/// The leader changes of an [`Election`], as an iterator (blocking until
/// the next change) or with [`recv_timeout`](Self::recv_timeout). Stops
/// when dropped.
pub struct Observer {
    rx: Receiver<Result<Option<Leader>, PluginError>>,
    stop: Wait,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// The next change, or `None` if none came within `timeout` (or the
    /// observer ended).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Result<Option<Leader>, PluginError>> {
        let until = Instant::now() + timeout;
        self.rx.recv_timeout(until.saturating_duration_since(Instant::now())).ok()
    }
}

impl Iterator for Observer {
    type Item = Result<Option<Leader>, PluginError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("stopped", &self.stop.is_cancelled()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::LockAdmin;
    use crate::testing_wait::WaitPlugin;

    const TTL: Duration = Duration::from_millis(600);

    fn election(plugin: &Arc<WaitPlugin>, name: &str) -> Election<WaitPlugin> {
        Election::new(Arc::clone(plugin), "leader", TTL).candidate(name)
    }

    #[test]
    fn one_leader_at_a_time_terms_rise_and_a_resign_hands_over() {
        let plugin = Arc::new(WaitPlugin::default());
        let (a, b) = (election(&plugin, "a"), election(&plugin, "b"));
        let first = a.campaign(Duration::from_secs(5)).unwrap().expect("nobody led");
        assert!(b.campaign(Duration::from_millis(100)).unwrap().is_none(), "two leaders");
        let leader = b.leader().unwrap().expect("a leads");
        assert_eq!((leader.owner.as_deref(), leader.term), (Some("a"), first.term()));

        let t1 = first.term().unwrap();
        let waiting = thread::spawn(move || b.campaign(Duration::from_secs(10)).unwrap());
        thread::sleep(Duration::from_millis(100));
        first.resign().unwrap();
        let second = waiting.join().unwrap().expect("b never led after a resigned");
        assert!(second.term().unwrap() > t1, "terms did not rise");
        assert_eq!(a.leader().unwrap().and_then(|l| l.owner).as_deref(), Some("b"));
        drop(second);
        assert_eq!(a.leader().unwrap(), None, "dropping a leadership did not resign");
    }

    #[test]
    fn a_deposed_leader_is_told_before_the_next_one_leads() {
        let plugin = Arc::new(WaitPlugin::default());
        let a = election(&plugin, "a");
        let leadership = a.campaign(Duration::from_secs(5)).unwrap().unwrap();
        plugin.force_release("leader", None).unwrap();
        let lost = leadership.guard().wait_lost(Duration::from_secs(10)).expect("no loss");
        assert_eq!(lost.key, "leader");
        assert!(leadership.is_lost());
        assert!(matches!(leadership.resign(), Err(ReleaseError::Lost(_))));
    }

    #[test]
    fn an_unfenced_lock_is_refused_unless_allowed() {
        let plugin = Arc::new(WaitPlugin::default());
        plugin.no_fences.store(true, Ordering::SeqCst);
        let err = election(&plugin, "a").campaign(Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
        assert!(err.message.contains("without a fence"), "{}", err.message);
        assert!(!plugin.inspect("leader").unwrap().held, "the refused lock was kept");
        let allowed = election(&plugin, "a").allow_unfenced(true);
        let leadership = allowed.campaign(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(leadership.term(), None);
    }

    #[test]
    fn a_cancelled_campaign_returns_at_once() {
        let plugin = Arc::new(WaitPlugin::default());
        let _leader = election(&plugin, "a").campaign(Duration::from_secs(1)).unwrap().unwrap();
        let wait = Wait::new(Duration::from_secs(60));
        let b = election(&plugin, "b");
        let cancel = wait.clone();
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            cancel.cancel();
        });
        assert!(b.campaign_until(&wait).unwrap().is_none());
        assert!(wait.is_cancelled());
        canceller.join().unwrap();
    }

    #[test]
    fn observe_reports_the_leader_then_each_change() {
        let plugin = Arc::new(WaitPlugin::default());
        let a = election(&plugin, "a");
        let watch = a.observe_every(Duration::from_millis(10));
        let next = || watch.recv_timeout(Duration::from_secs(10)).expect("no change seen").unwrap();
        assert_eq!(next(), None);
        let one = a.campaign(Duration::from_secs(1)).unwrap().unwrap();
        let seen = next().expect("a leads");
        assert_eq!((seen.owner.as_deref(), seen.term), (Some("a"), one.term()));
        // Renewals change only the expiry: not a change of leader.
        thread::sleep(TTL);
        one.resign().unwrap();
        assert_eq!(next(), None, "a renewal was reported as a change");
        let two = election(&plugin, "b").campaign(Duration::from_secs(1)).unwrap().unwrap();
        let seen = next().expect("b leads");
        assert_eq!((seen.owner.as_deref(), seen.term), (Some("b"), two.term()));
        drop(watch);
    }
}
