//! Keeping passwords out of every message this backend produces.
//!
//! URLs are redacted before they are formatted, and, because a driver error
//! could in principle echo what it was given, every error text is also
//! scrubbed of the configured passwords before it leaves the backend.

/// The URL with its password (or a lone user-info part, which some clients
/// read as a password) replaced by `***`. Works on strings that do not parse.
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_owned(),
    };
    format!("{head}{user}{host}{tail}")
}

/// The passwords of a set of URLs, to scrub from error texts.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    words: Vec<String>,
}

impl Secrets {
    /// Collects the password of each URL, both as written and percent-decoded.
    pub fn of<'a>(urls: impl IntoIterator<Item = &'a String>) -> Self {
        let mut words = Vec::new();
        for url in urls {
            if let Some(password) = redis::parse_redis_url(url).and_then(|u| {
                u.password().map(str::to_owned).or_else(|| {
                    // `redis://secret@host`: some clients take a lone user as the password.
                    (!u.username().is_empty()).then(|| u.username().to_owned())
                })
            }) {
                words.push(percent_decode(&password));
                words.push(password);
            }
        }
        words.retain(|w| !w.is_empty());
        // Longest first, so a password containing another is replaced whole.
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        words.dedup();
        Self { words }
    }

    /// `text` with every known password replaced by `***`.
    pub fn scrub(&self, text: String) -> String {
        if !self.words.iter().any(|w| text.contains(w.as_str())) {
            return text;
        }
        let mut out = text;
        for w in &self.words {
            out = out.replace(w.as_str(), "***");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
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
        let s = Secrets::of(&urls);
        assert_eq!(s.scrub("bad p@ss, p%40ss, plainuser".into()), "bad ***, ***, ***");
        assert_eq!(s.scrub("nothing here".into()), "nothing here");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
