//! Errors with the ABI class they belong to.

use std::fmt;

/// Which of the ABI's error codes a failure maps to.
///
/// Backends return the first two; the other kinds describe what a host saw
/// at the boundary. New kinds are only ever added, as the ABI appends status
/// codes, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input is wrong (`BEXT_LOCKING_ERR_INVALID`,
    /// `"invalid_argument"`): a key or TTL out of range, a bad config, or a
    /// value this backend cannot serve (a TTL too short for a Redlock
    /// quorum). Retrying the same call cannot help.
    InvalidArgument,
    /// The backend failed (`BEXT_LOCKING_ERR_BACKEND`, `"backend"`):
    /// unreachable, timed out, protocol error, or `renew` found the lock no
    /// longer ours.
    Backend,
    /// The plugin panicked and the panic was caught at the boundary
    /// (`BEXT_LOCKING_ERR_PANIC`, `"panic"`).
    Panic,
    /// The backend, or this instance's mode, cannot serve the call or one
    /// of its fields (`BEXT_LOCKING_ERR_UNSUPPORTED`, `"unsupported"`,
    /// ABI 1.1); the message says why. Hosts also report a slot a plugin
    /// does not have (a 1.0 plugin's `inspect`) with this kind. Retrying
    /// cannot help.
    Unsupported,
    /// The plugin's answer broke the ABI: a status code this host does not
    /// know, OK without a handle, a handle that does not parse. Never sent
    /// by a plugin; a host reports it (`"protocol"`).
    Protocol,
}

impl ErrorKind {
    /// The `code` of the ABI's error object (`"invalid_argument"`, …);
    /// [`Protocol`](Self::Protocol), which no plugin sends, is `"protocol"`.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Backend => "backend",
            ErrorKind::Panic => "panic",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "protocol",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failure with the ABI class it belongs to.
///
/// Backends return it so a bad config or a request they refuse
/// (`InvalidArgument`) is told apart from an unreachable server (`Backend`),
/// and the loader hands it to Rust hosts with the kind the plugin reported.
/// Messages must never contain credentials: build them from redacted URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A one-line, human-readable explanation naming the problem.
    pub message: String,
}

impl PluginError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// A bad-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// A backend failure.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }

    /// A call this backend or mode cannot serve, with the reason.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// The class of failure: branch on it rather than on the message.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone, as the string-typed [`LockingPlugin`](crate::LockingPlugin)
    /// methods carry it.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}
