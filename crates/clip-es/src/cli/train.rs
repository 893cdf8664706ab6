//! `clip-es train`: stage three, a segmentation network trained on the pseudo masks (library:
//! `clip_es_train::train`). Thin: argument parsing, progress bar, messages.

use super::common::exit_code;
use clap::ValueEnum;
use clip_es::progress::{IterationRecord, Progress};
use clip_es_train::data::TrainAugment;
use clip_es_train::deeplab::DeepLabConfig;
use clip_es_train::features::FeatureBudget;
use clip_es_train::loss::LossKind;
use clip_es_train::train::{Start, TrainConfig, TrainOptions, DECODER_LR};
use clip_es_train::Arch;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ArchArg {
    /// DeepLab-v2 (ResNet-101 + ASPP, multi-scale), as deeplab-pytorch trains it
    DeeplabV2,
    /// Light decoder on frozen CLIP patch features (cached on disk)
    ClipDecoder,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    /// Cross-entropy over the confident pixels (255 ignored)
    Ce,
    /// Class-balanced cross-entropy (each class present weighs the same)
    Balanced,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network to train
    #[arg(long, value_enum)]
    arch: ArchArg,
    /// Directory of the training images (<id>.jpg, .png, ...)
    #[arg(long)]
    images: PathBuf,
    /// Directory of the pseudo masks (<id>.png; 255 = unconfident, ignored by the loss)
    #[arg(long)]
    masks: PathBuf,
    /// Split file: one image id per line (first token; a deeplab-pytorch line
    /// `/JPEGImages/ID.jpg ...` gives the first path's file stem)
    #[arg(long)]
    split: PathBuf,
    /// Output directory: checkpoints, train.jsonl, loss.png (and features/ for clip-decoder)
    #[arg(long)]
    out: PathBuf,
    /// Number of classes, background included
    #[arg(long, default_value_t = defaults().num_classes)]
    num_classes: usize,
    /// Initial weights: a PyTorch state dict (deeplab-pytorch init / trained model), a
    /// torchvision ResNet-101 state dict (resnet101-*.pth: detected from its keys; DeepLab-v2 then
    /// uses torchvision's stride/dilation placement, its normalisation folded into the stem) or a
    /// safetensors file; the classifier is skipped when its class count differs
    #[arg(long)]
    init: Option<PathBuf>,
    /// DeepLab-v2 without --init: start from random weights anyway (for tests: a random
    /// ResNet-101 with frozen batch norm diverges on real photos)
    #[arg(long, conflicts_with = "init")]
    random_init: bool,
    /// Continue a run bit-for-bit from a checkpoint (no value or `latest`: the latest in --out), with the
    /// settings stored in it; only --iters may change
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<PathBuf>,
    /// Start a new run in an --out that holds one: its checkpoints, final.safetensors,
    /// train.jsonl, loss.png (and features/) are removed first (without it, or --resume, such
    /// an --out is refused)
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Iterations [default: 20000]
    #[arg(long)]
    iters: Option<usize>,
    /// Images per sub-batch
    #[arg(long, default_value_t = defaults().options.batch)]
    batch: usize,
    /// Sub-batches accumulated per iteration
    #[arg(long, default_value_t = defaults().options.iter_size)]
    iter_size: usize,
    /// Base learning rate [default: 2.5e-4 for deeplab-v2 (ASPP weights 10x, ASPP biases
    /// 20x), 0.01 for clip-decoder]
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = defaults().options.momentum)]
    momentum: f64,
    #[arg(long, default_value_t = defaults().options.weight_decay)]
    weight_decay: f64,
    /// Poly LR power (updated every --lr-step iterations)
    #[arg(long, default_value_t = defaults().options.poly_power)]
    poly_power: f64,
    #[arg(long, default_value_t = defaults().options.lr_step)]
    lr_step: usize,
    #[arg(long, value_enum, default_value_t = LossArg::from(defaults().options.loss))]
    loss: LossArg,
    /// Training crop (DeepLab-v2), padded with the mean colour and label 255
    #[arg(long, default_value_t = defaults().options.augment.crop)]
    crop: usize,
    /// Random scales of the training images (DeepLab-v2), each in [0.1, 4]
    #[arg(long, value_delimiter = ',', default_values_t = defaults().options.augment.scales)]
    scales: Vec<f64>,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// Seed of the initialisation, the sample order and the augmentation
    #[arg(long, default_value_t = defaults().options.seed)]
    seed: u64,
    /// Checkpoint every N iterations (and at the end)
    #[arg(long, default_value_t = defaults().options.save_every)]
    save_every: usize,
    /// Compute device: flex (CPU), or vulkan in builds with the `vulkan` feature (docs/gpu.md)
    #[arg(long, default_value_t = defaults().device)]
    device: String,
    /// DeepLab-v2 stem width (64 for ResNet-101; smaller for tests)
    #[arg(long, default_value_t = defaults().deeplab.width)]
    width: usize,
    /// DeepLab-v2 bottlenecks per stage
    #[arg(long, value_delimiter = ',', default_values_t = defaults().deeplab.blocks)]
    blocks: Vec<usize>,
    /// DeepLab-v2 ASPP rates
    #[arg(long, value_delimiter = ',', default_values_t = defaults().deeplab.rates)]
    rates: Vec<usize>,
    /// DeepLab-v2 extra input scales of multi-scale training (empty: none)
    #[arg(long, value_delimiter = ',', default_values_t = defaults().deeplab.msc_scales)]
    msc_scales: Vec<f32>,
    /// clip-decoder: the CLIP model of the features (directory, file, HF id or OpenAI name)
    #[arg(long, default_value_t = defaults().clip_model)]
    model: String,
    /// clip-decoder: feature cache directory [default: <out>/features]
    #[arg(long)]
    features: Option<PathBuf>,
    /// clip-decoder: images whose longer side exceeds this many pixels are scaled down for the
    /// ViT of the feature cache (0: never); VOC and COCO images keep their size
    #[arg(long, default_value_t = defaults().feature_budget.max_side)]
    max_side: usize,
    /// clip-decoder: memory limit in MB for one image's features (estimated before the ViT
    /// runs; an image over it is an error naming it). Default: the memory available
    #[arg(long)]
    memory_limit: Option<u64>,
    /// clip-decoder hidden width
    #[arg(long, default_value_t = defaults().decoder_hidden)]
    hidden: usize,
    /// clip-decoder x2 upsampling stages: logits at stride 16 / 2^N (1: stride 8, like
    /// DeepLab-v2; 2: stride 4, finer boundaries, about 3x the time per iteration)
    #[arg(long, default_value_t = defaults().decoder_upsamplings)]
    upsamplings: usize,
    /// clip-decoder training crop on the patch grid, in patches (0: whole maps, --batch 1)
    #[arg(long, default_value_t = defaults().options.grid_crop)]
    grid_crop: usize,
    /// Worker threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

/// The library's defaults of the training stage ([`TrainConfig::new`], [`TrainOptions`]'s
/// `Default`), the one place the options' defaults come from.
fn defaults() -> TrainConfig {
    let none = PathBuf::new;
    TrainConfig::new(Arch::DeepLabV2, none(), none(), none(), none())
}

impl From<LossKind> for LossArg {
    fn from(kind: LossKind) -> Self {
        match kind {
            LossKind::Plain => LossArg::Ce,
            LossKind::Balanced => LossArg::Balanced,
        }
    }
}

impl ArchArg {
    pub fn arch(self) -> Arch {
        match self {
            ArchArg::DeeplabV2 => Arch::DeepLabV2,
            ArchArg::ClipDecoder => Arch::ClipDecoder,
        }
    }
}

impl Args {
    /// The training stage's configuration.
    fn config(&self) -> anyhow::Result<TrainConfig> {
        let a = self;
        let blocks: [usize; 4] = a.blocks.clone().try_into().map_err(|v: Vec<usize>| {
            anyhow::anyhow!(
                "--blocks takes four numbers (bottlenecks per ResNet stage, e.g. 3,4,23,3), got {}",
                v.len()
            )
        })?;
        let arch = a.arch.arch();
        let mut c = TrainConfig::new(
            arch,
            a.images.clone(),
            a.masks.clone(),
            a.split.clone(),
            a.out.clone(),
        );
        c.num_classes = a.num_classes;
        c.start = match &a.resume {
            Some(p) if p.as_os_str() == "latest" => Start::Resume {
                checkpoint: None,
                iters: a.iters,
            },
            Some(p) => Start::Resume {
                checkpoint: Some(p.clone()),
                iters: a.iters,
            },
            None => Start::Fresh {
                init: a.init.clone(),
            },
        };
        c.options = TrainOptions {
            iters: a.iters.unwrap_or(c.options.iters),
            batch: a.batch,
            iter_size: a.iter_size,
            lr: a.lr.unwrap_or(match arch {
                Arch::DeepLabV2 => c.options.lr,
                Arch::ClipDecoder => DECODER_LR,
            }),
            momentum: a.momentum,
            weight_decay: a.weight_decay,
            poly_power: a.poly_power,
            lr_step: a.lr_step,
            loss: match a.loss {
                LossArg::Ce => LossKind::Plain,
                LossArg::Balanced => LossKind::Balanced,
            },
            augment: TrainAugment {
                crop: a.crop,
                scales: a.scales.clone(),
                flip: !a.no_flip,
            },
            grid_crop: a.grid_crop,
            seed: a.seed,
            save_every: a.save_every,
        };
        c.deeplab = DeepLabConfig {
            n_classes: a.num_classes,
            width: a.width,
            blocks,
            rates: a.rates.clone(),
            msc_scales: a.msc_scales.clone(),
            // a torchvision --init switches to Backbone::Torchvision (clip_es_train::train)
            style: Default::default(),
        };
        c.decoder_hidden = a.hidden;
        c.decoder_upsamplings = a.upsamplings;
        c.clip_model = a.model.clone();
        c.features = a.features.clone();
        c.feature_budget = FeatureBudget {
            max_side: a.max_side,
            memory_limit: a.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
        };
        c.device = a.device.clone();
        c.threads = a.threads;
        c.overwrite = a.overwrite;
        c.random_init = a.random_init;
        Ok(c)
    }
}

fn run_inner(a: Args) -> anyhow::Result<ExitCode> {
    let config = a.config()?;
    eprintln!("device: {}", clip_es_train::check_device(&config.device)?);
    execute(&config)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the training stage with progress bars (also the training stage of `clip-es run`).
pub fn execute(config: &TrainConfig) -> anyhow::Result<clip_es_train::train::TrainReport> {
    let bars = TrainBars::default();
    let report = clip_es_train::train::run(config, &bars);
    bars.finish();
    let report = report?;
    print_report(&report);
    Ok(report)
}

/// The training stage's closing line.
pub fn print_report(report: &clip_es_train::train::TrainReport) {
    eprintln!(
        "done: {} (log {}, curve {})",
        report.checkpoint.display(),
        report.log.display(),
        report.curve.display()
    );
}

/// The training stage's bars on stderr: the feature cache's, then the iterations' with the
/// loss and learning rate of the last one.
#[derive(Default)]
pub struct TrainBars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for TrainBars {
    fn start(&self, what: &str, len: usize) {
        let mut pb = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = pb.take() {
            b.finish_and_clear()
        }
        *pb = Some(bar(len as u64, what, what == "train"));
    }

    fn advance(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(1)
        }
    }

    fn failed(&self, id: &str, error: &str) {
        self.message(&format!("{id}: {error}"))
    }

    fn message(&self, text: &str) {
        match self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear()
        }
    }

    fn iteration(&self, record: &IterationRecord) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.set_message(format!("loss {:.4} lr {:.2e}", record.loss, record.lr));
            b.inc(1);
        }
    }
}

fn bar(len: u64, what: &str, with_message: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = if with_message {
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})"
    } else {
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})"
    };
    pb.set_style(ProgressStyle::with_template(template).expect("template"));
    pb.set_prefix(what.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Without options, the command's configuration is the library's for each architecture
    /// (the learning rate of the decoder included).
    #[test]
    fn parsed_defaults_are_the_library_defaults() {
        for (arch, name) in [
            (Arch::DeepLabV2, "deeplab-v2"),
            (Arch::ClipDecoder, "clip-decoder"),
        ] {
            let cli = Cli::try_parse_from([
                "train", "--arch", name, "--images", "i", "--masks", "m", "--split", "s", "--out",
                "o",
            ])
            .unwrap();
            let parsed = cli.args.config().unwrap();
            let library = TrainConfig::new(arch, "i".into(), "m".into(), "s".into(), "o".into());
            assert_eq!(format!("{parsed:?}"), format!("{library:?}"));
        }
    }
}
