//! How lock names map to Redis keys.
//!
//! A lock `jobs/nightly` under the default prefix lives at
//! `bext:lock:{jobs/nightly}` and its fence counter at
//! `bext:lock:fence:{jobs/nightly}`, and the holder's record for `inspect`
//! at `bext:lock:info:{jobs/nightly}`. The braces are a Redis Cluster hash
//! tag: both keys hash only the part inside them, so they share a slot and
//! one Lua script may touch both. Redis ends a tag at the *first* `}` and
//! ignores an empty one, so a name starting with `}` would split the pair;
//! such names use the fixed tag `{~}` instead (`bext:lock:#{~}}odd`).
//!
//! The layout is injective: a lock key continues the prefix with `{` or `#`,
//! a fence key with `fence:`, an info key with `info:`, and each carries
//! the whole name, so no two names and no two keys of one name ever meet.
//!
//! Waiters listen on the pub/sub channel `bext:lock:wake:{jobs/nightly}`,
//! laid out the same way (channels are not keys, but the same tag keeps a
//! sharded channel on the lock's slot should one ever be used).

/// The key holding the lock's token.
pub fn lock_key(prefix: &str, name: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + name.len() + 6);
    k.push_str(prefix);
    push_tagged(&mut k, name);
    k
}

/// The holder's record beside the lock (token digest, acquisition time,
/// owner), on the lock's TTL.
pub fn info_key(prefix: &str, name: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + name.len() + 11);
    k.push_str(prefix);
    k.push_str("info:");
    push_tagged(&mut k, name);
    k
}

/// The never-expiring fence counter of a lock.
pub fn fence_key(prefix: &str, name: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + name.len() + 12);
    k.push_str(prefix);
    k.push_str("fence:");
    push_tagged(&mut k, name);
    k
}

/// The pub/sub channel a release (or a force release, or a `renew_for`
/// that moves the expiry) publishes to, and waiters subscribe to.
pub fn wake_channel(prefix: &str, name: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + name.len() + 11);
    k.push_str(prefix);
    k.push_str("wake:");
    push_tagged(&mut k, name);
    k
}

fn push_tagged(k: &mut String, name: &str) {
    if name.starts_with('}') {
        k.push_str("#{~}");
        k.push_str(name);
    } else {
        k.push('{');
        k.push_str(name);
        k.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's rule: hash the part between the first `{` and the
    /// next `}` when it is non-empty, else the whole key.
    fn hashed_part(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    #[test]
    fn lock_and_fence_share_a_slot() {
        for name in ["jobs/nightly", "a}b", "}", "}}x", "{", "{}", "a{b}c", "ключ", "x}:fence"]
        {
            let (l, f) = (lock_key("p:", name), fence_key("p:", name));
            assert_eq!(hashed_part(&l), hashed_part(&f), "{name}: {l} vs {f}");
            assert_eq!(hashed_part(&l), hashed_part(&info_key("p:", name)), "{name}");
            assert_eq!(hashed_part(&l), hashed_part(&wake_channel("p:", name)), "{name}");
            assert_ne!(hashed_part(&l), l, "{name}: {l} has no usable tag");
        }
        assert_eq!(lock_key("bext:lock:", "jobs/nightly"), "bext:lock:{jobs/nightly}");
        assert_eq!(fence_key("bext:lock:", "jobs/nightly"), "bext:lock:fence:{jobs/nightly}");
    }

    #[test]
    fn layout_is_injective() {
        let names = [
            "a",
            "a}",
            "}a",
            "}",
            "fence:a",
            "{a}",
            "#{~}}a",
            "a}:fence",
            "fence:{a}",
            "info:a",
            "info:{a}",
            "wake:a",
            "wake:{a}",
        ];
        let mut all = std::collections::HashSet::new();
        for n in names {
            assert!(all.insert(lock_key("p", n)), "lock {n}");
            assert!(all.insert(fence_key("p", n)), "fence {n}");
            assert!(all.insert(info_key("p", n)), "info {n}");
            assert!(all.insert(wake_channel("p", n)), "wake {n}");
        }
    }
}
