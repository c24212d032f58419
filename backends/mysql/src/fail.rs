//! How a call failed, which decides what happens to its connection.

use std::fmt;
use std::io;

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// The connection is gone or unusable (closed, killed, I/O error).
    Connection,
    /// No answer in time; the connection's state is unknown.
    Timeout,
    /// The server refused the statement; the connection is still fine.
    Server,
    /// InnoDB chose this statement as a deadlock victim: nothing was
    /// changed, and running it again is safe.
    Deadlock,
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

/// Server errors after which the session is gone (or going): killed
/// (`KILL`: 1927 on MariaDB, 1053 while shutting down), or an aborted
/// connection.
const SESSION_GONE: [u16; 5] = [1053, 1077, 1152, 1158, 1927];
/// The statement was chosen as a deadlock victim.
const DEADLOCK: u16 = 1213;

impl Fail {
    pub fn new(kind: FailKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn from_mysql(e: &mysql::Error) -> Self {
        let kind = match e {
            mysql::Error::MySqlError(se) if se.code == DEADLOCK => FailKind::Deadlock,
            mysql::Error::MySqlError(se) if SESSION_GONE.contains(&se.code) => FailKind::Connection,
            mysql::Error::MySqlError(_)
            | mysql::Error::FromRowError(_)
            | mysql::Error::FromValueError(_) => FailKind::Server,
            mysql::Error::IoError(io) if is_timeout(io) => FailKind::Timeout,
            mysql::Error::DriverError(mysql::DriverError::ConnectTimeout)
            | mysql::Error::DriverError(mysql::DriverError::Timeout) => FailKind::Timeout,
            _ => FailKind::Connection,
        };
        Self::new(kind, describe_error(e))
    }

    /// Whether the connection that produced this failure can be reused.
    pub fn keeps_connection(&self) -> bool {
        matches!(self.kind, FailKind::Server | FailKind::Deadlock)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A one-line description of a client error; the driver's `Display` of a
/// socket timeout ("Resource temporarily unavailable") says nothing about
/// what happened.
pub(crate) fn describe_error(e: &mysql::Error) -> String {
    match e {
        mysql::Error::IoError(io) if is_timeout(io) => {
            "no answer from the server within statement_timeout_ms".to_owned()
        }
        mysql::Error::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection".to_owned()
        }
        mysql::Error::MySqlError(se) => {
            format!("ERROR {} ({}): {}", se.code, se.state, se.message)
        }
        other => other.to_string(),
    }
}
