//! What an unfenced lock's key holds when its holder names an owner.
//!
//! A plain `SET key value NX PX ttl` is the whole acquire of a lock without
//! fences, so whatever `inspect` must later tell about the holder travels in
//! the value itself: `<token>:<ttl_ms>:<owner>`. The handle's `lock_id` is
//! that whole value, so release and renew still compare the value as one
//! opaque token and nothing else is written on the way to a held lock.
//!
//! The TTL is there for `held_for_ms` by the server's clock: until the
//! first renew, the time since the acquisition is `ttl_ms - PTTL` (the
//! server set the expiry to its own clock plus `ttl_ms`); the first renew
//! writes that acquisition time into the holder's record, since a renew
//! resets the `PTTL` (see `scripts::RENEW` and `scripts::INSPECT`).
//!
//! The token is a UUID (no `:`) and the TTL digits, so the owner is
//! whatever follows the second `:`, colons and all. A value without the
//! two fields (a lock taken without an owner, a fenced lock, or one taken
//! by an older plugin) is a bare token.

/// The value, and `lock_id`, of an unfenced lock taken by `owner`; a bare
/// `token` without one (the exact command a hand-written client sends).
pub fn unfenced_value(token: String, ttl_ms: u64, owner: Option<&str>) -> String {
    let Some(owner) = owner else { return token };
    let mut v = token;
    v.reserve(owner.len() + 22);
    v.push(':');
    v.push_str(&ttl_ms.to_string());
    v.push(':');
    v.push_str(owner);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_follows_the_token_and_ttl() {
        let t = "7a1c2e4e-0f7e-4d0b-9c1e-2f5b8c2d9a11".to_owned();
        assert_eq!(unfenced_value(t.clone(), 30_000, None), t);
        assert_eq!(
            unfenced_value(t.clone(), 30_000, Some("host:42")),
            format!("{t}:30000:host:42")
        );
        assert_eq!(unfenced_value(t.clone(), 1, Some("")), format!("{t}:1:"));
    }
}
