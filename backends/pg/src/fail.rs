//! How a call failed, which decides what happens to its connection.

use std::fmt;

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// The connection is gone or unusable (closed, I/O error, FATAL).
    Connection,
    /// The deadline passed; the connection's state is unknown.
    Timeout,
    /// The server refused the statement; the connection is still fine.
    Server,
    /// Every pooled connection stayed busy until the deadline.
    Busy,
    /// The instance was cleaned up.
    Closed,
}

/// A failed call with a message fit for the caller (no credentials).
#[derive(Debug, Clone)]
pub(crate) struct Fail {
    pub kind: FailKind,
    pub message: String,
}

impl Fail {
    pub fn new(kind: FailKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn from_pg(e: &tokio_postgres::Error) -> Self {
        let kind = match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                let gone = matches!(db.severity(), "FATAL" | "PANIC")
                    || code.starts_with("57P")
                    || code.starts_with("08");
                if gone { FailKind::Connection } else { FailKind::Server }
            }
            None => FailKind::Connection,
        };
        Self::new(kind, describe_error(e))
    }

    /// Whether the connection that produced this failure can be reused.
    pub fn keeps_connection(&self) -> bool {
        self.kind == FailKind::Server
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A one-line description of a client error, including its causes (the
/// client's own `Display` stops at "db error" or "error connecting").
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}
