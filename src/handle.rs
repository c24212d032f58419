//! The token a successful `try_lock` hands out.

use serde::{Deserialize, Serialize};

/// Proof of a held lock, passed back to `renew` and `release`.
///
/// Its JSON form is the ABI's handle object:
/// `{"key":"jobs/nightly","lock_id":"…","ttl_ms":30000,"fence":7}`; `fence`
/// is omitted when the backend cannot promise one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHandle {
    /// The key that was locked.
    pub key: String,
    /// A token minted for this acquisition alone; the backend compares it on
    /// renew and release so a stale handle never touches a newer holder.
    pub lock_id: String,
    /// The lease length; every successful renew restarts it.
    pub ttl_ms: u64,
    /// A number that strictly increases with every acquisition of this key,
    /// across all holders. Pass it to the resource you protect so it can
    /// refuse writes from a holder whose lease has already ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}
