//! Helpers shared by the integration tests: fixture paths and self-removing temp directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The tiny models written by tools/make_tiny_clip.py.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh directory, removed on drop.
pub use clip_es_testkit::TempDir;

/// Copies the files of `src` (not recursive) into `dst`, skipping the names in `skip`.
pub fn copy_dir(src: &Path, dst: &Path, skip: &[&str]) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        std::fs::copy(entry.path(), dst.join(&name)).unwrap();
    }
}
