//! CLIP-ES (Lin et al., CVPR 2023, "CLIP is Also an Efficient Segmenter") pipeline stages.
//!
//! The CLIP model itself lives in `clip-es-model`; image decoding and resampling in
//! `clip-es-image`; the dense CRF in `clip-es-crf`. This crate holds the pipeline stages
//! (CAMs, affinity refinement, pseudo masks, evaluation) and the command-line interface.

pub mod affinity;
pub mod atomic;
pub mod budget;
pub mod cam;
pub mod cam_io;
pub mod classes;
pub mod datasets;
pub mod eval;
pub mod masks;
pub mod prompts;
