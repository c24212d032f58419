//! The `owner` a `run` acquisition records, for `bext-lock status` and
//! every other host's `inspect`.

use std::ffi::OsString;
use std::path::Path;

use bext_locking::MAX_OWNER_BYTES;

/// `hostname:pid:command`: the machine, this `bext-lock` process (the one
/// that holds and renews the lock) and the program it runs. Only the
/// program's file name is taken, never its arguments, which may carry
/// secrets; the result is cut to [`MAX_OWNER_BYTES`] on a character
/// boundary.
pub fn for_command(command: &[OsString]) -> String {
    let program = command
        .first()
        .map(|p| {
            let name = Path::new(p).file_name().unwrap_or(p.as_os_str());
            name.to_string_lossy().into_owned()
        })
        .unwrap_or_default();
    let mut owner = format!("{}:{program}", bext_locking_loader::default_owner());
    if owner.len() > MAX_OWNER_BYTES {
        let mut end = MAX_OWNER_BYTES;
        while !owner.is_char_boundary(end) {
            end -= 1;
        }
        owner.truncate(end);
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_host_pid_and_the_program_without_arguments() {
        let owner = for_command(&["/usr/local/bin/backup.sh".into(), "--password=x".into()]);
        let host_pid = bext_locking_loader::default_owner();
        assert_eq!(owner, format!("{host_pid}:backup.sh"));
        assert!(owner.ends_with(&format!(":{}:backup.sh", std::process::id())), "{owner}");
        assert!(!owner.contains("password"), "{owner}");
    }

    #[test]
    fn a_long_program_name_is_cut_to_the_owner_limit() {
        let owner = for_command(&["é".repeat(300).into()]);
        assert!(owner.len() <= MAX_OWNER_BYTES, "{}", owner.len());
        assert!(owner.starts_with(bext_locking_loader::default_owner()));
    }
}
