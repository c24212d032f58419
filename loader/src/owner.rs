//! The `owner` a Rust host sends when its caller names none.

use std::sync::OnceLock;

use bext_locking::MAX_OWNER_BYTES;

/// `hostname:pid` of this process, computed once: enough for an operator
/// looking at `inspect` to find the holder. Cut to
/// [`MAX_OWNER_BYTES`] on a character boundary should the hostname be
/// absurdly long.
pub fn default_owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let mut owner = format!("{}:{}", hostname(), std::process::id());
        if owner.len() > MAX_OWNER_BYTES {
            let mut end = MAX_OWNER_BYTES;
            while !owner.is_char_boundary(end) {
                end -= 1;
            }
            owner.truncate(end);
        }
        owner
    })
}

/// [`default_owner`] as a JSON string literal, escaped once: what every
/// request that names no owner carries.
pub(crate) fn default_owner_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| bext_locking_ffi::wire::json_string(default_owner()))
}

/// The host's name, or `localhost` when the system will not say.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_owner_is_host_and_pid() {
        let owner = super::default_owner();
        let (host, pid) = owner.rsplit_once(':').expect("host:pid");
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
        let json: String = serde_json::from_slice(super::default_owner_json()).unwrap();
        assert_eq!(json, owner);
    }
}
