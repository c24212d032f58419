//! The protected resource, simulated: a file that accepts a write only when
//! it carries a fence at least as high as the highest it has seen.
//!
//! Every process of a run opens the same file; `flock` makes each
//! read-compare-write atomic across them. This is what a fencing-aware
//! database or storage service does with the token a lock hands out.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A fenced storage file.
#[derive(Debug, Clone)]
pub struct FencedStorage {
    path: PathBuf,
}

/// The highest fence, as fixed-width decimal text at offset 0.
const WIDTH: usize = 20;

impl FencedStorage {
    /// Creates (or empties) the file: nothing seen yet.
    pub fn create(path: &Path) -> io::Result<Self> {
        std::fs::write(path, format!("{:0WIDTH$}", 0))?;
        Ok(Self { path: path.to_owned() })
    }

    /// A storage another process created.
    pub fn open(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }

    fn locked(&self) -> io::Result<Flock<File>> {
        let file = File::options().read(true).write(true).open(&self.path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    fn read(file: &File) -> io::Result<u64> {
        let mut buf = [0u8; WIDTH];
        file.read_exact_at(&mut buf, 0)?;
        std::str::from_utf8(&buf)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt fenced storage"))
    }

    /// Writes with `fence`: accepted (true) when it is at least the highest
    /// fence seen, which it then becomes; refused (false) otherwise.
    pub fn write(&self, fence: u64) -> io::Result<bool> {
        let file = self.locked()?;
        let highest = Self::read(&file)?;
        if fence < highest {
            return Ok(false);
        }
        file.write_all_at(format!("{fence:0WIDTH$}").as_bytes(), 0)?;
        Ok(true)
    }

    /// The highest fence written so far.
    pub fn highest(&self) -> io::Result<u64> {
        Self::read(&*self.locked()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rising_and_equal_fences_and_refuses_lower_ones() {
        let dir = bext_locking_test_support::TempDir::new("safety-storage");
        let s = FencedStorage::create(&dir.path().join("store")).unwrap();
        assert_eq!(s.highest().unwrap(), 0);
        assert!(s.write(5).unwrap());
        assert!(s.write(5).unwrap(), "the same holder writes twice");
        assert!(s.write(u64::MAX - 1).unwrap());
        assert!(!s.write(6).unwrap(), "a stale fence is refused");
        let other = FencedStorage::open(&dir.path().join("store"));
        assert_eq!(other.highest().unwrap(), u64::MAX - 1);
    }
}
