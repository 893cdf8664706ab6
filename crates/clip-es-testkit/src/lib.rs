//! Helpers shared by the tests of every crate of the workspace (a dev-dependency only, with no
//! dependencies of its own): [`TempDir`], a fresh directory per test that removes itself.

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory under the system temp dir, unique to this process and call (the
/// name holds the tag, the process id and a counter, so tests running in parallel in one binary,
/// or two test binaries at once, never share one), removed with its contents on drop.
///
/// Dereferences to [`Path`], so `dir.join("x")` and `&dir` as a `&Path` (or as a command
/// argument) work as on a path.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/clip-es-<tag>-<pid>-<n>`, emptied first should a stale one exist (a
    /// process id reused after a killed run). Panics if it cannot be created: a test cannot run
    /// without it.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("clip-es-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create the test directory {}: {e}", path.display());
        }
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// So that `Command::arg(&dir)` works as with a path.
impl AsRef<OsStr> for TempDir {
    fn as_ref(&self) -> &OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Errors are ignored: a test may have removed the directory itself already.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::TempDir;

    #[test]
    fn each_dir_is_fresh_unique_and_removed_on_drop() {
        let a = TempDir::new("testkit");
        let b = TempDir::new("testkit");
        assert_ne!(a.path(), b.path());
        assert!(a.is_dir() && b.is_dir());
        assert_eq!(std::fs::read_dir(&a).unwrap().count(), 0);
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::write(a.join("sub/file"), b"x").unwrap();
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists(), "{} still exists", kept.display());
        assert!(b.is_dir());
    }

    #[test]
    fn a_dir_removed_by_its_test_is_no_error_on_drop() {
        let a = TempDir::new("testkit-gone");
        std::fs::remove_dir_all(&a).unwrap();
        drop(a);
    }
}
