//! Keeping credentials out of messages and logs.
//!
//! Two tools, used together by the backends that connect to servers and by
//! the `bext-lock` command: [`redact_url`] masks a URL's password before the
//! URL is formatted into a message, and [`Secrets`] remembers the configured
//! passwords so that any text that may echo one (a driver's error, a
//! server's answer, another plugin's message) is scrubbed before it leaves.
//! Neither needs the URL to parse: the messages that matter most are about
//! URLs that did not.
//!
//! When in doubt these functions mask too much rather than too little: an
//! `@` in a URL's path makes what precedes it look like user-info, and a
//! `:` in there makes part of it look like a password.

use std::fmt;
use std::ops::Range;

/// What replaces a secret in output.
pub const MASK: &str = "***";

/// How to read user-info that has no `:` (`scheme://word@host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoneUser {
    /// A user name, shown as it is (PostgreSQL, HTTP).
    Name,
    /// A password, masked: some Redis clients read `redis://secret@host` so.
    Secret,
}

/// The secret part of the user-info of the URL whose authority starts at
/// `start` in `s`, as a byte range of `s`.
///
/// The query and fragment may hold an `@` (`?reply=a@b`), so the URL is cut
/// at the first `?` or `#` (and, in running text, at white space); the
/// user-info then runs to the last `@`, since a password may hold `@` and
/// `:` of its own, and the password starts after the user-info's first `:`.
fn secret_at(s: &str, start: usize, in_text: bool, lone: LoneUser) -> Option<Range<usize>> {
    let rest = &s[start..];
    let end = rest
        .find(|c: char| c == '?' || c == '#' || (in_text && c.is_whitespace()))
        .unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    match (rest[..at].find(':'), lone) {
        (Some(colon), _) => Some(start + colon + 1..start + at),
        (None, LoneUser::Secret) => Some(start..start + at),
        (None, LoneUser::Name) => None,
    }
}

/// Where the authority of a lone URL starts: after `scheme://`, or at the
/// start when there is no scheme (`user:pw@host`).
fn authority_start(url: &str) -> usize {
    match url.find("://") {
        Some(i) if url[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
            i + 3
        }
        _ => 0,
    }
}

/// The password in `url`'s user-info (`scheme://user:PASSWORD@host`), as
/// written (percent-encoded, if it was). The scheme is optional; `url` need
/// not parse. With [`LoneUser::Secret`], user-info without a `:` counts as
/// the password.
pub fn url_password(url: &str, lone: LoneUser) -> Option<&str> {
    secret_at(url, authority_start(url), false, lone).map(|r| &url[r])
}

/// `url` with the password in its user-info replaced by [`MASK`]; `url`
/// itself when it holds none. The scheme is optional; `url` need not parse.
pub fn redact_url(url: &str, lone: LoneUser) -> String {
    match secret_at(url, authority_start(url), false, lone) {
        Some(r) => format!("{}{MASK}{}", &url[..r.start], &url[r.end..]),
        None => url.to_owned(),
    }
}

/// The password ranges of every `scheme://` URL in running text.
fn passwords_in_text(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        match secret_at(text, start, true, LoneUser::Name) {
            Some(r) => {
                from = r.end;
                found.push(r);
            }
            None => from = start,
        }
    }
    found
}

/// `text` with the password of every `scheme://` URL in it replaced by
/// [`MASK`] (user-info without a `:` is kept: it names a user).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in passwords_in_text(text) {
        out.push_str(&text[last..r.start]);
        out.push_str(MASK);
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

/// Secret strings to remove from any text before it is shown: each as
/// written and percent-decoded, since a driver may print either.
///
/// `Debug` prints how many there are, never what they are.
#[derive(Clone, Default)]
pub struct Secrets {
    words: Vec<String>,
    min_chars: usize,
}

impl Secrets {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// None yet; later ones shorter than `min_chars` characters are ignored,
    /// for callers that collect "secrets" by guesswork and would rather let
    /// a two-letter one through than mask every occurrence of it.
    pub fn with_min_chars(min_chars: usize) -> Self {
        Self { words: Vec::new(), min_chars }
    }

    /// Remembers `secret` (and its percent-decoded form). Empty strings are
    /// ignored.
    pub fn add(&mut self, secret: &str) {
        for word in [secret.to_owned(), percent_decode(secret)] {
            let long_enough = !word.is_empty() && word.chars().count() >= self.min_chars;
            if long_enough && !self.words.contains(&word) {
                self.words.push(word);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        self.words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    }

    /// Remembers the password of every `scheme://` URL in `text`.
    pub fn add_url_passwords(&mut self, text: &str) {
        for r in passwords_in_text(text) {
            self.add(&text[r]);
        }
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// `text` with every URL password ([`redact_urls`]) and every
    /// remembered secret replaced by [`MASK`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = redact_urls(text);
        for w in &self.words {
            if out.contains(w.as_str()) {
                out = out.replace(w.as_str(), MASK);
            }
        }
        out
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.words.len())
    }
}

/// `%XX` escapes decoded; a malformed escape stays as it is, and bytes that
/// are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_loses_its_password() {
        let pg = |u| redact_url(u, LoneUser::Name);
        assert_eq!(pg("postgres://u:p@ss:w@db/x?to=a@b"), "postgres://u:***@db/x?to=a@b");
        assert_eq!(pg("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(pg("postgres://app:@db/x"), "postgres://app:***@db/x");
        assert_eq!(pg("postgres://db:5432/x"), "postgres://db:5432/x");
        assert_eq!(pg("app:pw@db"), "app:***@db");
        assert_eq!(pg(""), "");
        // A password may hold white space and `/` when it is one URL.
        assert_eq!(pg("postgres://u:se cret/x@h/0"), "postgres://u:***@h/0");
        // Some Redis clients read lone user-info as the password.
        assert_eq!(redact_url("redis://pw@h", LoneUser::Secret), "redis://***@h");
        assert_eq!(redact_url("redis://@h", LoneUser::Secret), "redis://***@h");
    }

    #[test]
    fn passwords_are_found_as_written() {
        assert_eq!(url_password("postgres://me:p%40ss@h/db?x=a@b", LoneUser::Name), Some("p%40ss"));
        assert_eq!(url_password("postgres://me@h/db", LoneUser::Name), None);
        assert_eq!(url_password("redis://secret@h", LoneUser::Secret), Some("secret"));
        assert_eq!(url_password("me:pw@[::1/db", LoneUser::Name), Some("pw"));
        assert_eq!(url_password("host=h port=5", LoneUser::Secret), None);
    }

    #[test]
    fn every_url_in_a_text_loses_its_password() {
        assert_eq!(redact_urls("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact_urls("postgres://u:p%40ss@db/x?sslmode=disable"),
            "postgres://u:***@db/x?sslmode=disable"
        );
        assert_eq!(redact_urls("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("a redis://:one@a:1 and redis://x:two@b:2/"),
            "a redis://:***@a:1 and redis://x:***@b:2/"
        );
        // A password may contain '@' and ':'.
        assert_eq!(redact_urls("redis://u:a:b@c@host/"), "redis://u:***@host/");
        // A URL without a password does not hide the ones after it.
        assert_eq!(
            redact_urls("redis://a:1 failed, then redis://x:two@b:2 did"),
            "redis://a:1 failed, then redis://x:***@b:2 did"
        );
    }

    #[test]
    fn secrets_are_scrubbed_raw_and_decoded() {
        let mut s = Secrets::new();
        s.add("p%40ss");
        s.add("plainuser");
        s.add("");
        assert_eq!(s.scrub("bad p@ss, p%40ss, plainuser"), "bad ***, ***, ***");
        assert_eq!(s.scrub("nothing here"), "nothing here");
        // URL passwords go even when nobody said they were secret.
        assert_eq!(s.scrub("at redis://:other@h"), "at redis://:***@h");
        assert_eq!(format!("{s:?}"), "Secrets(3 hidden)");
        assert!(Secrets::new().is_empty());
    }

    #[test]
    fn longer_secrets_are_masked_whole() {
        let mut s = Secrets::new();
        s.add("abc");
        s.add("xabcx");
        assert_eq!(s.scrub("xabcx abc"), "*** ***");
    }

    #[test]
    fn short_guesses_can_be_ignored() {
        let mut s = Secrets::with_min_chars(3);
        s.add("ab");
        s.add("%41%42");
        assert_eq!(s.scrub("ab AB %41%42"), "ab AB ***");
        s.add_url_passwords("x redis://:pw1@a:1 redis://b:2 redis://u:a@c");
        assert_eq!(s.scrub("pw1 a"), "*** a");
    }

    #[test]
    fn percent_escapes_decode_leniently() {
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
        assert_eq!(percent_decode("p%40ss"), "p@ss");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
