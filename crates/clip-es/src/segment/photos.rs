//! The photos of a `segment` run: files as given, folders expanded to their images.

use std::path::{Path, PathBuf};

/// File extensions taken from directories.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// Why a run cannot start: its photos or its output folder.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The photos to process with the stem of their outputs: files as given, directories expanded
/// to their images (sorted, not recursive). A directory without images is an error.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PlanError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| PlanError(format!("reading {}: {e}", input.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            if found.is_empty() {
                return Err(PlanError(format!(
                    "{}: no images in this directory (looked for .{})",
                    input.display(),
                    IMAGE_EXTENSIONS.join(" .")
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    out.into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| PlanError(format!("{}: not a file name", p.display())))?;
            Ok((p, stem))
        })
        .collect()
}

/// `path` made absolute with its existing part resolved (symbolic links, `..`), so that two
/// spellings of one place compare equal; the part that does not exist yet is appended as given.
pub(super) fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |p, n| p.join(n));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}
