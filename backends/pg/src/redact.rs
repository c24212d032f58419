//! Keeping the password out of every message.
//!
//! Messages name the server by a URL rebuilt from the parsed config without
//! its password, and anything that may echo input (parse errors, server
//! messages) is scrubbed of every password-like value found in the
//! connection string, raw and percent-decoded.

use tokio_postgres::config::Host;

/// Password-like values to remove from any text before it leaves the crate.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// Best-effort extraction from a connection string that may not even
    /// parse: the userinfo password of a URL and every `password=` value.
    pub fn guess(url: &str) -> Self {
        let mut found = Vec::new();
        if let Some((_, rest)) = url.split_once("://") {
            if let Some(at) = rest.rfind('@') {
                if let Some((_, pass)) = rest[..at].split_once(':') {
                    found.push(pass.to_owned());
                }
            }
        }
        let mut rest = url;
        while let Some(i) = rest.find("password=") {
            rest = &rest[i + "password=".len()..];
            let value = if let Some(quoted) = rest.strip_prefix('\'') {
                quoted.split('\'').next().unwrap_or(quoted)
            } else {
                rest.split(|c: char| c == '&' || c.is_whitespace()).next().unwrap_or(rest)
            };
            found.push(value.to_owned());
        }
        let mut s = Self::default();
        for f in found {
            s.add(&f);
        }
        s
    }

    /// Adds the password the parser found, if any.
    pub fn with_password(mut self, password: Option<&[u8]>) -> Self {
        if let Some(p) = password {
            self.add(&String::from_utf8_lossy(p));
        }
        self
    }

    fn add(&mut self, secret: &str) {
        for s in [secret.to_owned(), percent_decode(secret)] {
            if !s.is_empty() && !self.0.contains(&s) {
                self.0.push(s);
            }
        }
        // Longest first, so a secret containing another is removed whole.
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
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

/// `postgres://user@host:port/db`, rebuilt from the parsed config so that it
/// can never carry the password.
pub(crate) fn url_shape(pg: &tokio_postgres::Config) -> String {
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let db = pg.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_url_and_keyword_passwords() {
        let s = Secrets::guess("postgres://me:p%40ss@h/db?password=other&x=1");
        let out = s.scrub("a p%40ss b p@ss c other d");
        assert_eq!(out, "a *** b *** c *** d");
        let s = Secrets::guess("host=h password='se cret' user=u");
        assert_eq!(s.scrub("x se cret y"), "x *** y");
        let s = Secrets::guess("host=h password=plain user=u");
        assert_eq!(s.scrub("plain!"), "***!");
    }

    #[test]
    fn shape_has_no_password() {
        let pg: tokio_postgres::Config = "postgres://me:secret@a:1,b:2/db".parse().unwrap();
        assert_eq!(url_shape(&pg), "postgres://me@a:1,b:2/db");
    }
}
