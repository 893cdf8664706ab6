//! Paths every CLI test module uses: the crate, the example photos, the tiny test CLIP.

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> PathBuf {
    root().join("../../examples")
}

/// The tiny random CLIP (Hugging Face layout, 10 blocks) shipped with clip-es-model's tests.
pub fn tiny_clip() -> PathBuf {
    root().join("../clip-es-model/tests/fixtures/tiny-deep-hf")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}
