//! `clip-es predict`: label maps of a trained network ([`clip_es::predict::run`]), one PNG per
//! image that `clip-es eval --masks` scores, optionally refined by the dense CRF and with
//! overlay pictures. A failing image is reported and left out; finished files are skipped on a
//! rerun.

use super::cams::check_threads;
use super::common::{exit_code, report_failures, Bars};
use clip_es::masks::CrfParams;
use clip_es::predict::PredictConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint written by `clip-es train` (checkpoint-*.safetensors or final.safetensors)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the images
    #[arg(long)]
    images: PathBuf,
    /// Split file: one image id per line (first token; a deeplab-pytorch line
    /// `/JPEGImages/ID.jpg ...` gives the first path's file stem)
    #[arg(long)]
    split: PathBuf,
    /// Output directory of the label PNGs (<id>.png)
    #[arg(long)]
    out: PathBuf,
    /// Input scales. DeepLab-v2: the multi-scale inputs whose logits are max-pooled (1.0 is
    /// always used) [default: the checkpoint's, 1.0,0.75,0.5]. clip-decoder: the views whose
    /// logits are averaged [default: 1.0]. Each in [0.1, 4]
    #[arg(long, value_delimiter = ',')]
    scales: Option<Vec<f64>>,
    /// clip-decoder: do not add the mirror image of each view
    #[arg(long)]
    no_flip: bool,
    /// Refine the labels with the dense CRF of the pseudo masks (deeplab-pytorch's
    /// post-processing: softmax, Gaussian + bilateral kernels, 10 iterations)
    #[arg(long)]
    crf: bool,
    /// clip-decoder: the CLIP model [default: the one the checkpoint was trained with]
    #[arg(long)]
    model: Option<String>,
    /// clip-decoder: images whose longer side exceeds this many pixels are scaled down for the
    /// ViT (the label maps are still written at the image's size); 0 never scales. VOC and
    /// COCO images (at most 640 pixels) keep their size
    #[arg(long, default_value_t = clip_es::budget::DEFAULT_MAX_SIDE)]
    max_side: usize,
    /// Memory limit in MB for one image (network, scores and CRF, estimated before the network
    /// runs; an image over it fails with a message and the others are written). Default: the
    /// memory available (and what `ulimit -v` leaves)
    #[arg(long)]
    memory_limit: Option<u64>,
    /// Compute device: flex (CPU), or vulkan in builds with the `vulkan` feature (docs/gpu.md)
    #[arg(long, default_value = "flex")]
    device: String,
    /// Write grayscale PNGs instead of VOC-palette ones
    #[arg(long)]
    grayscale: bool,
    /// Also write an overlay PNG per image into this directory (photo, coloured labels with
    /// outlines, legend)
    #[arg(long)]
    overlays: Option<PathBuf>,
    /// Class names of the legends (voc, coco or a class file) [default: voc]
    #[arg(long)]
    classes: Option<String>,
    /// Recompute outputs that exist (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    exif: super::common::ExifArgs,
    /// Worker threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(a: Args) -> anyhow::Result<ExitCode> {
    let mut c = PredictConfig::new(a.checkpoint, a.images, a.split, a.out);
    c.scales = a.scales;
    c.flip = !a.no_flip;
    c.crf = a.crf.then(CrfParams::default);
    c.clip_model = a.model;
    c.max_side = a.max_side;
    c.memory_limit = a.memory_limit.map(|mb| mb.saturating_mul(1_000_000));
    c.device = a.device;
    c.palette = !a.grayscale;
    c.overwrite = a.overwrite;
    c.exif = a.exif.mode();
    c.threads = check_threads(a.threads)?;
    if let Some(d) = a.overlays {
        let spec = a.classes.as_deref().unwrap_or("voc");
        c.overlays = Some((d, clip_es::ClassSet::from_spec(spec)?));
    }
    eprintln!("device: {}", clip_es_train::check_device(&c.device)?);
    execute(&c)
}

/// Runs the stage and prints its outcome; shared with `run`.
pub fn execute(config: &PredictConfig) -> anyhow::Result<ExitCode> {
    let r = clip_es::predict::run(config, &Bars::default())?;
    eprintln!(
        "{} images: {} label maps written, {} already present, {} failed",
        r.images,
        r.written,
        r.skipped,
        r.failures.len()
    );
    Ok(report_failures(&r.failures))
}
