//! `clip-es cams`: CLIP-ES CAMs for a dataset ([`clip_es::cams::run`]). One `<id>.npz` per
//! image; finished images are skipped on a rerun; `--shard I/N` splits the work between
//! machines; a failing image is reported and skipped, and the exit code is 1 if any failed.

use super::common::{exit_code, report_failures, Bars};
use clip_es::cams::{CamSettings, CamsConfig, DatasetConfig};
use clip_es::gradcam::{Augment, DEFAULT_TEMPLATE};
use clip_es::ClassSet;
use clip_es_model::DEFAULT_MODEL;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which images and labels: shared by `cams` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// Classes: `voc`, `coco`, or a class file (one `name` or `name: prompt text` per line)
    #[arg(long, default_value = "voc")]
    pub dataset: String,
    /// Directory of the images (<id>.jpg, or another usual extension)
    #[arg(long)]
    pub images: PathBuf,
    /// VOC annotations directory: labels are the objects of <id>.xml
    #[arg(long, conflicts_with = "labels")]
    pub annotations: Option<PathBuf>,
    /// Label file with lines `id l1 l2 ...` (class indices or names); without --split, its ids
    /// are the images to process
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Split file: one image id per line, optionally followed by its labels (COCO format), or
    /// deeplab-pytorch lines (`/JPEGImages/ID.jpg /SegmentationClass/ID.png`: the id is the
    /// first path's file stem)
    #[arg(long)]
    pub split: Option<PathBuf>,
}

impl DatasetArgs {
    pub fn config(&self) -> DatasetConfig {
        DatasetConfig {
            images: self.images.clone(),
            annotations: self.annotations.clone(),
            labels: self.labels.clone(),
            split: self.split.clone(),
        }
    }
}

/// The CAM method's options: shared by `cams` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct CamArgs {
    /// Model: a Hugging Face id, a local directory or file (HF, OpenAI .pt), or ViT-B/16 etc.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// CAA box threshold (default: 0.4 for voc and class files, 0.7 for coco)
    #[arg(long)]
    pub box_threshold: Option<f64>,
    /// Background words: `voc`, `coco`, `none` or a file with one word per line
    /// (default: the dataset's; coco's for class files)
    #[arg(long)]
    pub background: Option<String>,
    /// Prompt template(s), `{}` standing for the class name; several are averaged
    #[arg(long = "template", default_value = DEFAULT_TEMPLATE)]
    pub templates: Vec<String>,
    /// Also save the unrefined GradCAM maps (`highres`)
    #[arg(long)]
    pub save_unrefined: bool,
    /// Keep the resized positional embedding in float32 (the reference rounds it to float16)
    #[arg(long)]
    pub exact_pos_embed: bool,
    /// Test-time augmentation: scales at which the CAMs are also computed and averaged after
    /// resizing to the image size (each input side is rounded up to the patch size)
    #[arg(long, default_value = "1.0", value_parser = Augment::parse_scales)]
    pub scales: ::std::vec::Vec<f64>,
    /// Test-time augmentation: also compute the CAMs of the mirrored image at every scale
    /// (mirrored back before averaging)
    #[arg(long)]
    pub flip: bool,
    /// Images whose longer side exceeds this many pixels are downscaled for the ViT (their CAMs
    /// are still written at the original size); 0 never downscales. The default leaves VOC and
    /// COCO images (at most 640 pixels) as the reference runs them. In `run --train` it also
    /// bounds the clip-decoder's ViT input (feature cache and predictions)
    #[arg(long, default_value_t = clip_es::budget::DEFAULT_MAX_SIDE)]
    pub max_side: usize,
    /// Memory limit in MB for one image's CAMs (estimated before allocating; an image over it
    /// fails with a message and the run goes on; in `run` it also bounds the masks stage and,
    /// with --train, the feature cache and the predictions).
    /// Default: the memory available (and what `ulimit -v` leaves)
    #[arg(long)]
    pub memory_limit: Option<u64>,
    #[command(flatten)]
    pub exif: super::common::ExifArgs,
}

impl CamArgs {
    /// The classes of `--dataset` with `--background` applied.
    pub fn classes(&self, data: &DatasetArgs) -> anyhow::Result<ClassSet> {
        Ok(ClassSet::from_specs(
            &data.dataset,
            self.background.as_deref(),
        )?)
    }

    pub fn settings(&self) -> anyhow::Result<CamSettings> {
        if let Some(t) = self.box_threshold {
            anyhow::ensure!(
                (0.0..=1.0).contains(&t),
                "--box-threshold must be in [0, 1]"
            );
        }
        anyhow::ensure!(
            self.templates.iter().all(|t| t.contains("{}")),
            "every --template must contain {{}}"
        );
        Ok(CamSettings {
            box_threshold: self.box_threshold,
            templates: self.templates.clone(),
            save_unrefined: self.save_unrefined,
            exact_pos_embed: self.exact_pos_embed,
            augment: Augment {
                scales: self.scales.clone(),
                flip: self.flip,
            },
            max_side: self.max_side,
            memory_limit: self.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
            device: None,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DatasetArgs,
    #[command(flatten)]
    cam: CamArgs,
    /// Output directory for <id>.npz
    #[arg(long)]
    out: PathBuf,
    /// Process only shard I of N (0-based): images whose position in the split is I mod N
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
    /// Recompute images whose output exists (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    /// Write a JSON report (per-image seconds by stage, failures) to this file
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the image tower and its gradients run: cpu (the CPU kernels), flex (burn's CPU
    /// backend) or vulkan (a GPU, in builds with the `vulkan` feature); CAA stays on the CPU
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceArg,
}

/// A `--device` value of the CAMs (`None`: the CPU kernels).
#[derive(Clone, Copy, Debug)]
pub struct DeviceArg(pub Option<clip_es_gpu::BurnDevice>);

pub fn parse_device(s: &str) -> Result<DeviceArg, String> {
    clip_es::cams::parse_device(s).map(DeviceArg)
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected I/N, e.g. 0/4"))?;
    let i: usize = i.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let n: usize = n.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 || i >= n {
        return Err(format!("{s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// A `--threads` value: positive.
pub fn check_threads(threads: Option<usize>) -> anyhow::Result<Option<usize>> {
    if let Some(t) = threads {
        clip_es::progress::check_threads(t).map_err(anyhow::Error::msg)?;
    }
    Ok(threads)
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let settings = CamSettings {
        device: args.device.0,
        ..args.cam.settings()?
    };
    let config = CamsConfig {
        data: args.data.config(),
        classes: args.cam.classes(&args.data)?,
        model: args.cam.model.clone(),
        settings,
        out: args.out,
        shard: args.shard,
        overwrite: args.overwrite,
        report: args.report,
        threads: check_threads(args.threads)?,
        exif: args.cam.exif.mode(),
    };
    execute(&config)
}

/// Runs the stage and prints its outcome; shared with `run`.
pub fn execute(config: &CamsConfig) -> anyhow::Result<ExitCode> {
    eprintln!(
        "device: {}",
        clip_es::cams::open_device(config.settings.device)?
    );
    let report = clip_es::cams::run(config, &Bars::default())?;
    Ok(report_failures(&report.failures))
}
