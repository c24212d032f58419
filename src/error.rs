//! Errors a backend reports when it is created.

use std::fmt;

/// Which of the ABI's error codes a failure maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is wrong (`BEXT_LOCKING_ERR_INVALID`,
    /// `"invalid_argument"`): retrying the same call cannot help.
    InvalidArgument,
    /// The backend failed (`BEXT_LOCKING_ERR_BACKEND`, `"backend"`).
    Backend,
}

/// A failure with the ABI class it belongs to.
///
/// Backend constructors return it so a bad config (`InvalidArgument`) is told
/// apart from an unreachable server (`Backend`). Messages must never contain
/// credentials: build them from redacted URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// A one-line, human-readable explanation naming the problem.
    pub message: String,
}

impl PluginError {
    /// A bad-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::InvalidArgument, message: message.into() }
    }

    /// A backend failure.
    pub fn backend(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Backend, message: message.into() }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}
