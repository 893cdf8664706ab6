//! Pseudo masks with confidence (docs/algorithm.md, "Pseudo masks"; reference
//! `eval_cam_with_crf.py`): CAMs plus
//! background score -> dense CRF -> label map, pixels whose CRF marginal is below the
//! confidence threshold set to 255 (ignored by the segmentation loss: the paper's
//! confidence-guided loss).
//!
//! Three parts: the CRF wiring ([`crf`]), one image's pseudo mask ([`one_image`]) and the
//! stage over a split ([`stage`]); the label PNG format they write (shared with the evaluator,
//! `predict` and training) lives in `clip_es_data::labels` and is re-exported here.
//!
//! Reference behaviour reproduced by default:
//! - the CAMs are float16 and numpy evaluates `bg = (1 - max_k cam_k) ** 1` and
//!   `unary_from_softmax` (`-log(clip(p, 1e-5, 1))`) in float16 (`clip_es_crf::unary`);
//! - the image given to the bilateral kernel is the BGR image minus the mean
//!   (104.008, 116.669, 122.675) cast to uint8: numpy's float32 -> uint8 cast on x86-64
//!   truncates toward zero and wraps modulo 256 (checked: -104.008 -> 152), channels in B, G, R
//!   order; `CrfImage::Rgb` gives the true colours instead;
//! - CRF: Potts Gaussian (sxy 1, weight 3) and bilateral (sxy 67, srgb 3, weight 4) kernels,
//!   10 mean-field iterations; label = first maximum of the marginals, mapped through `keys`;
//!   the threshold compares the float32 marginal with the float32 nearest the threshold (numpy
//!   casts the Python float to the array's dtype).

pub mod crf;
pub mod one_image;
pub mod stage;

pub use clip_es_data::labels::{encode_label_png, read_label_png, voc_palette, LabelMap};
pub use crf::*;
pub use one_image::*;
pub use stage::*;
