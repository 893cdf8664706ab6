//! Data concerns shared by every stage of clip-es (the CAM and mask stages in `clip-es`, the
//! training stage in `clip-es-train`, which `clip-es` depends on): the rule for image ids
//! ([`check_id`]) and the stage manifest that records which settings made a folder of outputs
//! ([`manifest`]).

pub mod manifest;

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
