//! Data concerns shared by every stage of clip-es (the CAM and mask stages in `clip-es`, the
//! training stage in `clip-es-train`, which `clip-es` depends on), each with one home and one
//! rule: image ids ([`check_id`]) and split files ([`split`]), label PNGs, the ignore label and
//! the VOC palette ([`labels`]), crash-safe writes and the probe of an output folder
//! ([`atomic`]), the canvas and bitmap text of the pictures ([`canvas`]), the Caffe mean
//! ([`CAFFE_MEAN_BGR`]) and the stage manifest that records which settings made a folder of
//! outputs ([`manifest`]), and the one progress protocol of every stage
//! ([`progress`]).

pub mod atomic;
pub mod canvas;
pub mod labels;
pub mod manifest;
pub mod progress;
pub mod split;

pub use atomic::probe_dir;
pub use labels::IGNORE_LABEL;

/// The Caffe ImageNet mean in B, G, R order, on the 0..255 scale: what the reference subtracts
/// from the image before the CRF's bilateral kernel (`eval_cam_with_crf.py`) and what
/// deeplab-pytorch subtracts from DeepLab-v2's input (`configs/voc12.yaml`, `MEAN`).
pub const CAFFE_MEAN_BGR: [f64; 3] = [104.008, 116.669, 122.675];

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
