//! The requests one backend instance can serve.

use bext_locking::{MAX_TTL_MS, PluginError};

/// TTL bounds of one instance, inside the ABI's 1 to
/// [`MAX_TTL_MS`](bext_locking::MAX_TTL_MS). Declared once by the backend
/// ([`Backend::limits`](crate::Backend::limits)) and checked by the
/// [`Plugin`](crate::Plugin) wrapper on every `try_lock` and `renew`, so a
/// refusal is always `invalid_argument` and always says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    min_ttl_ms: u64,
    max_ttl_ms: u64,
    /// Why the bounds are narrower than the ABI's, for the message.
    why: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::abi()
    }
}

impl Limits {
    /// The ABI's own bounds: every TTL from 1 ms to 365 days.
    pub fn abi() -> Self {
        Self { min_ttl_ms: 1, max_ttl_ms: MAX_TTL_MS, why: None }
    }

    /// Raises the shortest TTL to `min_ttl_ms`; `why` ends the refusal's
    /// message ("ttl_ms is 2; this backend needs at least 3: `why`").
    pub fn with_min_ttl_ms(mut self, min_ttl_ms: u64, why: impl Into<String>) -> Self {
        self.min_ttl_ms = min_ttl_ms.max(1);
        self.why = Some(why.into());
        self
    }

    /// Lowers the longest TTL to `max_ttl_ms`, saying why.
    pub fn with_max_ttl_ms(mut self, max_ttl_ms: u64, why: impl Into<String>) -> Self {
        self.max_ttl_ms = max_ttl_ms.min(MAX_TTL_MS);
        self.why = Some(why.into());
        self
    }

    /// The shortest TTL served.
    pub fn min_ttl_ms(&self) -> u64 {
        self.min_ttl_ms
    }

    /// The longest TTL served.
    pub fn max_ttl_ms(&self) -> u64 {
        self.max_ttl_ms
    }

    /// Whether a TTL the ABI already accepts is inside these bounds.
    #[inline]
    pub(crate) fn serves(&self, ttl_ms: u64) -> bool {
        (self.min_ttl_ms..=self.max_ttl_ms).contains(&ttl_ms)
    }

    /// Checks a TTL the ABI already accepts against these bounds.
    pub(crate) fn check_ttl(&self, backend: &str, ttl_ms: u64) -> Result<(), PluginError> {
        if self.serves(ttl_ms) {
            return Ok(());
        }
        let why = self.why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
        Err(PluginError::invalid(format!(
            "{backend}: ttl_ms is {ttl_ms}; this instance serves {} to {} ms{why}",
            self.min_ttl_ms, self.max_ttl_ms
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bext_locking::ErrorKind;

    #[test]
    fn bounds_are_inclusive_and_refusals_say_why() {
        let l = Limits::abi().with_min_ttl_ms(3, "the drift allowance is 2 ms");
        assert!(l.check_ttl("x", 3).is_ok());
        assert!(l.check_ttl("x", MAX_TTL_MS).is_ok());
        let e = l.check_ttl("x", 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            "x: ttl_ms is 2; this instance serves 3 to 31536000000 ms: the drift allowance is 2 ms"
        );
        let l = Limits::abi().with_max_ttl_ms(1000, "short leases only");
        assert!(l.check_ttl("x", 1001).unwrap_err().message.contains("1 to 1000 ms"));
    }
}
