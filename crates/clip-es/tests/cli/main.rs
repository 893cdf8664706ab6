//! The integration tests that run the `clip-es` binary (and those sharing its fixtures), in one
//! test binary: each test binary of this crate links the whole program, burn included, so one
//! binary instead of ten saves nine links. Run one file's tests with a filter on its module name,
//! e.g. `cargo test --release -p clip-es --test cli train_cli::`.

mod cams_cli;
mod cams_device;
mod common;
mod device_cli;
mod entry_points;
mod eval;
mod hardening;
mod large_photos;
mod masks;
mod options;
mod predict_memory;
mod prompts_cli;
mod segment_cli;
mod split_lines;
mod train_cli;
mod tta;
