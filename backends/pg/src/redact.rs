//! Keeping the password out of every message.
//!
//! Messages name the server by a URL rebuilt from the parsed config without
//! its password, and anything that may echo input (parse errors, server
//! messages) is scrubbed, by [`bext_locking::redact::Secrets`], of every
//! password-like value found in the connection string.

use bext_locking::redact::{LoneUser, Secrets, url_password};
use tokio_postgres::config::Host;

/// Best-effort extraction from a connection string that may not even
/// parse: the user-info password of a URL and every `password=` value
/// (libpq keyword syntax, or a URL's query parameter).
pub(crate) fn guess(url: &str) -> Secrets {
    let mut secrets = Secrets::new();
    if url.contains("://") {
        if let Some(pass) = url_password(url, LoneUser::Name) {
            secrets.add(pass);
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
        secrets.add(value);
    }
    secrets
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
        let s = guess("postgres://me:p%40ss@h/db?password=other&x=1");
        let out = s.scrub("a p%40ss b p@ss c other d");
        assert_eq!(out, "a *** b *** c *** d");
        let s = guess("host=h password='se cret' user=u");
        assert_eq!(s.scrub("x se cret y"), "x *** y");
        let s = guess("host=h password=plain user=u");
        assert_eq!(s.scrub("plain!"), "***!");
    }

    #[test]
    fn shape_has_no_password() {
        let pg: tokio_postgres::Config = "postgres://me:secret@a:1,b:2/db".parse().unwrap();
        assert_eq!(url_shape(&pg), "postgres://me@a:1,b:2/db");
    }
}
