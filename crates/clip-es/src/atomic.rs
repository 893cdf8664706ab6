//! Crash-safe output files: the one convention of every stage lives in the foundation crate
//! (`clip_es_data::atomic`: a temporary `.{name}.{pid}.partial` sibling renamed into place);
//! this path keeps working for the code that names it.

pub use clip_es_data::atomic::*;
