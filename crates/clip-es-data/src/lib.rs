//! Data concerns shared by every stage of clip-es (the CAM and mask stages in `clip-es`, the
//! training stage in `clip-es-train`, which `clip-es` depends on): the rule for image ids
//! ([`check_id`]), the probe of an output folder ([`probe_dir`]) and the stage manifest that records which settings made a folder of outputs
//! ([`manifest`]), and the one progress protocol of every stage ([`progress`]).

pub mod manifest;
pub mod progress;

use std::path::{Component, Path};

/// Why an id cannot name files: ids become `<images>/<id>.jpg` and `<out>/<id>.npz`, so an id
/// must be one plain file name (no separator, not `.` or `..`, not absolute) for every output
/// to stay inside the output directory.
pub fn check_id(id: &str) -> Result<(), String> {
    let mut parts = Path::new(id).components();
    let plain = matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none();
    if !plain || id.contains(['/', '\\', '\0']) {
        return Err(format!(
            "id `{}` is not a plain file name (ids may not hold `/`, `\\`, be `.` or `..`, or be absolute): outputs must stay inside the output directory",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// Makes sure results can be written into `dir` before any work is done: creates it (and its
/// parents) and writes, then removes, a small probe file. A `dir` that is a file, a read-only
/// directory or a full disk is reported here, once, instead of after every image was computed.
pub fn probe_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "{}: exists and is not a directory: an output location (--out) must be a folder, not a file",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    let probe = dir.join(format!(".clip-es-probe.{}", std::process::id()));
    let written = std::fs::write(&probe, b"clip-es write probe\n");
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("{}: cannot write into the directory: {e}", dir.display()))
}
