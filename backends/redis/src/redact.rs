//! Keeping passwords out of every message this backend produces.
//!
//! URLs are redacted before they are formatted, and, because a driver error
//! could in principle echo what it was given, every error text is also
//! scrubbed of the configured passwords before it leaves the backend. The
//! work is done by [`bext_locking::redact`]; what is Redis's own is that a
//! lone user-info part (`redis://secret@host`) counts as a password, since
//! some clients read it so.

use bext_locking::redact::{self, LoneUser, Secrets};

/// The URL with its password (or a lone user-info part) replaced by `***`.
/// Works on strings that do not parse.
pub fn redact_url(url: &str) -> String {
    redact::redact_url(url, LoneUser::Secret)
}

/// The passwords of a set of URLs, to scrub from error texts.
pub(crate) fn secrets_of<'a>(urls: impl IntoIterator<Item = &'a String>) -> Secrets {
    let mut secrets = Secrets::new();
    for url in urls {
        if let Some(password) = redact::url_password(url, LoneUser::Secret) {
            secrets.add(password);
        }
    }
    secrets
}

/// How a server (or a set of servers) is named in messages, and the
/// passwords those messages must not carry.
#[derive(Debug)]
pub(crate) struct Voice {
    /// The redacted URL (or URLs) messages name.
    pub label: String,
    secrets: Secrets,
}

impl Voice {
    pub fn new(label: String, secrets: Secrets) -> Self {
        Self { label, secrets }
    }

    /// `redis <label>: <what>`, scrubbed, on one line (the driver's
    /// messages may span several).
    pub fn message(&self, what: &str) -> String {
        let what: Vec<&str> = what.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        self.secrets.scrub(&format!("redis {}: {}", self.label, what.join("; ")))
    }

    /// A driver error as a message; a timeout names the setting that bounds it.
    pub fn error(&self, e: &redis::RedisError) -> String {
        if e.is_timeout() {
            return self.message("no answer before the deadline (op_timeout_ms)");
        }
        self.message(&describe(e))
    }
}

/// A driver error in words. A reply that is not the Redis protocol at all
/// (the driver's multi-line "parse error") is almost always a URL pointing
/// at another service's port.
pub(crate) fn describe(e: &redis::RedisError) -> String {
    if e.kind() == redis::ErrorKind::ParseError {
        return "the server's reply is not the Redis protocol: is this the port of another \
                service (HTTP, say)?"
            .to_owned();
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("redis://user:pw@h"), "redis://user:***@h");
        assert_eq!(redact_url("redis://pw@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://u:p@ss:w@h/x?y@z"), "redis://u:***@h/x?y@z");
        assert_eq!(redact_url("u:pw@h"), "u:***@h");
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let urls = vec!["redis://:p%40ss@h".to_owned(), "redis://plainuser@h".to_owned()];
        let s = secrets_of(&urls);
        assert_eq!(s.scrub("bad p@ss, p%40ss, plainuser"), "bad ***, ***, ***");
        assert_eq!(s.scrub("nothing here"), "nothing here");
    }

    #[test]
    fn a_multi_line_driver_error_becomes_one_line() {
        let v = Voice::new("redis://h:1".into(), Secrets::with_min_chars(3));
        let m = v.message(
            "parse error - ParseError: Parse error at 1\nUnexpected `33`\n\nUnexpected `60`",
        );
        assert_eq!(
            m,
            "redis redis://h:1: parse error - ParseError: Parse error at 1; Unexpected `33`; Unexpected `60`"
        );
    }

    #[test]
    fn messages_name_the_server_without_its_password() {
        let url = "redis://:hunter2@h:1".to_owned();
        let voice = Voice::new(redact_url(&url), secrets_of([&url]));
        assert_eq!(voice.message("said hunter2"), "redis redis://:***@h:1: said ***");
    }
}
