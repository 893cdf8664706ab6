//! `clip-es train`: stage three, a segmentation network trained on the pseudo masks (library:
//! `clip_es_train::train`). Thin: argument parsing, progress bar, messages.

use super::common::exit_code;
use anyhow::Context;
use clap::ValueEnum;
use clip_es_train::data::{load_items, Augment};
use clip_es_train::decoder::DecoderConfig;
use clip_es_train::deeplab::DeepLabConfig;
use clip_es_train::features::cache_all;
use clip_es_train::loss::LossKind;
use clip_es_train::sgd::Sgd;
use clip_es_train::train::{latest_checkpoint, train, Source, TrainOptions};
use clip_es_train::{device, Model};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Split file: one image id per line (first token)
    #[arg(long)]
    split: PathBuf,
    /// Output directory: checkpoints, train.jsonl, loss.png (and features/ for clip-decoder)
    #[arg(long)]
    out: PathBuf,
    /// Number of classes, background included
    #[arg(long, default_value_t = 21)]
    num_classes: usize,
    /// Initial weights: a PyTorch state dict (deeplab-pytorch init / trained model) or a
    /// safetensors file; the classifier is skipped when its class count differs
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue a run bit-for-bit from a checkpoint (no value or `latest`: the latest in --out), with the
    /// settings stored in it; only --iters may change
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<PathBuf>,
    /// Iterations [default: 20000]
    #[arg(long)]
    iters: Option<usize>,
    /// Images per sub-batch
    #[arg(long, default_value_t = 5)]
    batch: usize,
    /// Sub-batches accumulated per iteration
    #[arg(long, default_value_t = 2)]
    iter_size: usize,
    /// Base learning rate [default: 2.5e-4 for deeplab-v2 (ASPP weights 10x, ASPP biases
    /// 20x), 0.01 for clip-decoder]
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Poly LR power (updated every --lr-step iterations)
    #[arg(long, default_value_t = 0.9)]
    poly_power: f64,
    #[arg(long, default_value_t = 10)]
    lr_step: usize,
    #[arg(long, value_enum, default_value_t = LossArg::Ce)]
    loss: LossArg,
    /// Training crop (DeepLab-v2), padded with the mean colour and label 255
    #[arg(long, default_value_t = 321)]
    crop: usize,
    /// Random scales of the training images (DeepLab-v2)
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.75,1.0,1.25,1.5")]
    scales: Vec<f64>,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// Seed of the initialisation, the sample order and the augmentation
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N iterations (and at the end)
    #[arg(long, default_value_t = 1000)]
    save_every: usize,
    /// Compute device: flex (CPU); cuda or wgpu in builds with those features
    #[arg(long, default_value = "flex")]
    device: String,
    /// DeepLab-v2 stem width (64 for ResNet-101; smaller for tests)
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// DeepLab-v2 bottlenecks per stage
    #[arg(long, value_delimiter = ',', default_value = "3,4,23,3")]
    blocks: Vec<usize>,
    /// DeepLab-v2 ASPP rates
    #[arg(long, value_delimiter = ',', default_value = "6,12,18,24")]
    rates: Vec<usize>,
    /// DeepLab-v2 extra input scales of multi-scale training (empty: none)
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.75")]
    msc_scales: Vec<f32>,
    /// clip-decoder: the CLIP model of the features (directory, file, HF id or OpenAI name)
    #[arg(long, default_value = "ViT-B/16")]
    model: String,
    /// clip-decoder: feature cache directory [default: <out>/features]
    #[arg(long)]
    features: Option<PathBuf>,
    /// clip-decoder hidden width
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// clip-decoder training crop on the patch grid, in patches (0: whole maps, --batch 1)
    #[arg(long, default_value_t = 20)]
    grid_crop: usize,
    /// Worker threads (default: all cores)
    #[arg(long, short)]
    jobs: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(j) = a.jobs {
        anyhow::ensure!(j > 0, "--jobs must be at least 1");
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j)
            .build_global();
    }
    let dev = device(&a.device)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let blocks: [usize; 4] = a
        .blocks
        .clone()
        .try_into()
        .map_err(|_| anyhow::anyhow!("--blocks takes four numbers"))?;
    let mut opts = TrainOptions {
        iters: a.iters.unwrap_or(20000),
        batch: a.batch,
        iter_size: a.iter_size,
        lr: a.lr.unwrap_or(match a.arch {
            ArchArg::DeeplabV2 => 2.5e-4,
            ArchArg::ClipDecoder => 0.01,
        }),
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        poly_power: a.poly_power,
        lr_step: a.lr_step,
        loss: match a.loss {
            LossArg::Ce => LossKind::Plain,
            LossArg::Balanced => LossKind::Balanced,
        },
        augment: Augment {
            crop: a.crop,
            scales: a.scales.clone(),
            flip: !a.no_flip,
        },
        grid_crop: a.grid_crop,
        seed: a.seed,
        save_every: a.save_every,
    };
    let (mut model, mut sgd, start, clip_model) = match &a.resume {
        Some(p) => {
            let path = if p.as_os_str() == "latest" {
                latest_checkpoint(&a.out)?.ok_or_else(|| {
                    anyhow::anyhow!("--resume: no checkpoint in {}", a.out.display())
                })?
            } else {
                p.clone()
            };
            let (model, tensors, meta) = Model::open(&path, &dev)?;
            let iters = a.iters;
            opts = TrainOptions::from_json(&meta["options"])
                .ok_or_else(|| anyhow::anyhow!("{}: no run settings", path.display()))?;
            if let Some(i) = iters {
                opts.iters = i;
            }
            let mut sgd = Sgd::new(opts.momentum, opts.weight_decay);
            sgd.load_state(&model.store, &tensors);
            let start = meta["iteration"].as_u64().unwrap_or(0) as usize;
            eprintln!(
                "resuming {} at iteration {start} (settings from the checkpoint)",
                path.display()
            );
            (
                model,
                sgd,
                start,
                meta["clip_model"].as_str().unwrap_or(&a.model).to_string(),
            )
        }
        None => {
            let mut model = match a.arch {
                ArchArg::DeeplabV2 => Model::deeplab(
                    DeepLabConfig {
                        n_classes: a.num_classes,
                        width: a.width,
                        blocks,
                        rates: a.rates.clone(),
                        msc_scales: a.msc_scales.clone(),
                    },
                    &dev,
                    a.seed,
                ),
                ArchArg::ClipDecoder => Model::decoder(
                    DecoderConfig {
                        n_classes: a.num_classes,
                        in_dim: 0,
                        hidden: a.hidden,
                    },
                    &dev,
                    a.seed,
                ),
            };
            if let (Some(init), ArchArg::DeeplabV2) = (&a.init, a.arch) {
                let unused = model.load_weights(init, true)?;
                eprintln!(
                    "initialised from {} ({} tensors of the file unused)",
                    init.display(),
                    unused.len()
                );
            }
            (
                model,
                Sgd::new(opts.momentum, opts.weight_decay),
                0,
                a.model.clone(),
            )
        }
    };
    let n_classes = model.n_classes();
    let items = load_items(&a.images, &a.masks, &a.split, n_classes)?;
    let source = match model.arch() {
        clip_es_train::Arch::DeepLabV2 => Source::Images(items),
        clip_es_train::Arch::ClipDecoder => {
            let cache = a.features.clone().unwrap_or_else(|| a.out.join("features"));
            let clip = clip_es_model::Clip::load(&clip_model)
                .with_context(|| format!("loading CLIP `{clip_model}`"))?;
            let pb = bar(items.len() as u64, "features");
            cache_all(clip.vision(), &items, &cache, &|| pb.inc(1))?;
            pb.finish_and_clear();
            let dim = clip.vision().width();
            let current = match &model.net {
                clip_es_train::model::Net::Decoder(d) => d.config.clone(),
                clip_es_train::model::Net::DeepLab(_) => unreachable!("arch checked above"),
            };
            if current.in_dim == 0 {
                model = Model::decoder(
                    DecoderConfig {
                        in_dim: dim,
                        ..current
                    },
                    &dev,
                    a.seed,
                );
                if let Some(init) = &a.init {
                    let unused = model.load_weights(init, true)?;
                    eprintln!(
                        "initialised from {} ({} tensors of the file unused)",
                        init.display(),
                        unused.len()
                    );
                }
            } else {
                anyhow::ensure!(
                    current.in_dim == dim,
                    "the checkpoint's decoder takes {}-d features, `{clip_model}` gives {dim}",
                    current.in_dim
                );
            }
            Source::Features { items, cache }
        }
    };
    let pb = bar((opts.iters - start.min(opts.iters)) as u64, "train");
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
        )
        .expect("template"),
    );
    let meta = serde_json::json!({"clip_model": clip_model});
    let last = train(
        &mut model,
        &mut sgd,
        &source,
        &opts,
        &a.out,
        start,
        meta,
        &mut |p| {
            pb.set_message(format!("loss {:.4} lr {:.2e}", p.loss, p.lr));
            pb.inc(1);
        },
    )?;
    pb.finish_and_clear();
    eprintln!(
        "done: {} (log {}, curve {})",
        last.display(),
        a.out.join("train.jsonl").display(),
        a.out.join("loss.png").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
        )
        .expect("template"),
    );
    pb.set_prefix(what.to_string());
    pb
}
