//! The settings of a training run: [`TrainOptions`] (deeplab-pytorch `configs/voc12.yaml`
//! defaults), [`TrainConfig`] (the stage's whole configuration, with [`TrainConfig::validate`])
//! and how a run begins ([`Start`]).

use crate::data::TrainAugment;
use crate::error::{Result, TrainError};
use crate::loss::LossKind;
use std::path::PathBuf;

/// Settings of a run (defaults: deeplab-pytorch `configs/voc12.yaml`).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub iters: usize,
    pub batch: usize,
    /// Gradient accumulation: sub-batches per iteration (`ITER_SIZE`).
    pub iter_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub poly_power: f64,
    /// The poly LR is updated every this many iterations.
    pub lr_step: usize,
    pub loss: LossKind,
    pub augment: TrainAugment,
    /// clip-decoder crop on the feature grid, in patches (0: whole maps, batch 1 only).
    pub grid_crop: usize,
    pub seed: u64,
    pub save_every: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            iters: 20000,
            batch: 5,
            iter_size: 2,
            lr: 2.5e-4,
            momentum: 0.9,
            weight_decay: 5e-4,
            poly_power: 0.9,
            lr_step: 10,
            loss: LossKind::Plain,
            augment: TrainAugment {
                crop: 321,
                scales: vec![0.5, 0.75, 1.0, 1.25, 1.5],
                flip: true,
            },
            grid_crop: 20,
            seed: 0,
            save_every: 1000,
        }
    }
}

impl TrainOptions {
    /// The settings stored in a checkpoint by [`train`](super::train).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let us = |k: &str| v.get(k)?.as_u64().map(|x| x as usize);
        let fl = |k: &str| v.get(k)?.as_f64();
        Some(TrainOptions {
            iters: us("iters")?,
            batch: us("batch")?,
            iter_size: us("iter_size")?,
            lr: fl("lr")?,
            momentum: fl("momentum")?,
            weight_decay: fl("weight_decay")?,
            poly_power: fl("poly_power")?,
            lr_step: us("lr_step")?,
            loss: match v.get("loss")?.as_str()? {
                "balanced" => LossKind::Balanced,
                _ => LossKind::Plain,
            },
            augment: TrainAugment {
                crop: us("crop")?,
                scales: v
                    .get("scales")?
                    .as_array()?
                    .iter()
                    .map(|x| x.as_f64())
                    .collect::<Option<Vec<_>>>()?,
                flip: v.get("flip")?.as_bool()?,
            },
            grid_crop: us("grid_crop")?,
            seed: v.get("seed")?.as_u64()?,
            save_every: us("save_every")?,
        })
    }

    /// Checks every setting's range for `arch` (also those read back from a checkpoint): values
    /// that would panic (a zero batch, crop or step), train nothing (a zero, negative or NaN
    /// learning rate or scale, no iterations) or exhaust memory before the first iteration
    /// (huge batches and crops). Names the option and the value.
    pub fn validate(&self, arch: crate::Arch) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let count = |name: &str, v: usize, max: usize| -> Result<()> {
            if (1..=max).contains(&v) {
                Ok(())
            } else if max == usize::MAX {
                bad(format!("{name} must be at least 1, got {v}"))
            } else {
                bad(format!("{name} must be in 1..={max}, got {v}"))
            }
        };
        count("--iters", self.iters, usize::MAX)?;
        count("--batch", self.batch, MAX_BATCH)?;
        count("--iter-size", self.iter_size, MAX_BATCH)?;
        count("--lr-step", self.lr_step, usize::MAX)?;
        count("--save-every", self.save_every, usize::MAX)?;
        // The sample counter (iteration x iter-size x batch) is a u64.
        if (self.iters as u64)
            .checked_mul(self.iter_size as u64)
            .and_then(|n| n.checked_mul(self.batch as u64))
            .is_none()
        {
            return bad(format!(
                "--iters x --iter-size x --batch is too large ({} x {} x {})",
                self.iters, self.iter_size, self.batch
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "--lr (the learning rate) must be a positive number, got {}",
                self.lr
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        for (name, v) in [
            ("--weight-decay", self.weight_decay),
            ("--poly-power", self.poly_power),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a number >= 0, got {v}"));
            }
        }
        match arch {
            crate::Arch::DeepLabV2 => {
                count("--crop", self.augment.crop, MAX_CROP)?;
                let a = &self.augment;
                if a.scales.is_empty() || a.scales.len() > 64 {
                    return bad(format!(
                        "--scales (the random training scales) takes 1 to 64 scales, got {}",
                        a.scales.len()
                    ));
                }
                if let Some(s) = a
                    .scales
                    .iter()
                    .find(|s| !(s.is_finite() && **s > 0.0 && **s <= MAX_SCALE))
                {
                    return bad(format!(
                        "--scales (the random training scales) must each be in (0, {MAX_SCALE}], \
                         got {s}"
                    ));
                }
            }
            crate::Arch::ClipDecoder => {
                if self.grid_crop > MAX_GRID_CROP {
                    return bad(format!(
                        "--grid-crop must be in 0..={MAX_GRID_CROP} patches, got {}",
                        self.grid_crop
                    ));
                }
                if self.grid_crop == 0 && self.batch > 1 {
                    return bad(format!(
                        "--grid-crop 0 (whole feature maps, whose sizes differ) needs --batch 1, \
                         got --batch {}",
                        self.batch
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"iters": self.iters, "batch": self.batch, "iter_size": self.iter_size, "lr": self.lr,
            "momentum": self.momentum, "weight_decay": self.weight_decay, "poly_power": self.poly_power,
            "lr_step": self.lr_step, "loss": self.loss.name(), "crop": self.augment.crop, "scales": self.augment.scales,
            "flip": self.augment.flip, "grid_crop": self.grid_crop, "seed": self.seed, "save_every": self.save_every})
    }
}

/// How a run begins.
#[derive(Clone, Debug)]
pub enum Start {
    /// A new network, optionally initialised from a weights file (a PyTorch state dict such as
    /// deeplab-pytorch's init, a torchvision ResNet-101, or a safetensors file); the classifier
    /// is skipped when its class count differs.
    Fresh { init: Option<PathBuf> },
    /// Continue bit-for-bit from a checkpoint (`None`: the latest in the output directory) with
    /// the settings stored in it; only the iteration count may change.
    Resume {
        checkpoint: Option<PathBuf>,
        iters: Option<usize>,
    },
    /// Continue the run in the output directory (from its latest checkpoint, to
    /// `options.iters`) if it holds one made with these same settings (other settings are an
    /// error naming them, see [`check_rerun`](super::check_rerun)); start fresh from `init` if it holds none. What a
    /// rerun of `clip-es run --train` does.
    Rerun { init: Option<PathBuf> },
}

/// Everything `clip-es train` (and the training stage of `clip-es run`) needs.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub arch: crate::Arch,
    /// Directory of the training images.
    pub images: PathBuf,
    /// Directory of the pseudo masks (`<id>.png`; 255 is ignored by the loss).
    pub masks: PathBuf,
    /// Split file of the training ids.
    pub split: PathBuf,
    /// Output directory: checkpoints, `train.jsonl`, `loss.png` (and `features/`).
    pub out: PathBuf,
    /// Classes, background included.
    pub num_classes: usize,
    pub start: Start,
    pub options: TrainOptions,
    /// DeepLab-v2's shape (its `n_classes` is replaced by `num_classes`).
    pub deeplab: crate::deeplab::DeepLabConfig,
    /// clip-decoder hidden width.
    pub decoder_hidden: usize,
    /// clip-decoder x2 upsampling stages (logit stride 16 / 2^n).
    pub decoder_upsamplings: usize,
    /// clip-decoder: the CLIP model of the features (directory, file, HF id or OpenAI name).
    pub clip_model: String,
    /// clip-decoder feature cache (default: `<out>/features`).
    pub features: Option<PathBuf>,
    /// clip-decoder: the largest CLIP input of the feature cache and the memory one image's
    /// forward pass may take.
    pub feature_budget: crate::features::FeatureBudget,
    /// `flex` (CPU), or `vulkan` in builds with that feature ([`crate::open_device`]).
    pub device: String,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// A fresh start into an `out` that holds a run first removes that run's files (its
    /// checkpoints, `final.safetensors`, `train.jsonl`, `loss.png`, the default feature cache);
    /// without it such a start is an error.
    pub overwrite: bool,
    /// Start a DeepLab-v2 from random weights without `init` (tests; it diverges on real
    /// photos, see [`TrainConfig::validate`]).
    pub random_init: bool,
}

impl TrainConfig {
    /// deeplab-pytorch's settings for `arch` (the clip-decoder: LR 0.01, 20x20-patch crops).
    pub fn new(
        arch: crate::Arch,
        images: PathBuf,
        masks: PathBuf,
        split: PathBuf,
        out: PathBuf,
    ) -> Self {
        let mut options = TrainOptions::default();
        if arch == crate::Arch::ClipDecoder {
            options.lr = DECODER_LR;
        }
        TrainConfig {
            arch,
            images,
            masks,
            split,
            out,
            num_classes: 21,
            start: Start::Fresh { init: None },
            options,
            deeplab: crate::deeplab::DeepLabConfig::resnet101(21),
            decoder_hidden: 256,
            decoder_upsamplings: 1,
            clip_model: "ViT-B/16".into(),
            features: None,
            feature_budget: Default::default(),
            device: "flex".into(),
            threads: None,
            overwrite: false,
            random_init: false,
        }
    }
}

impl TrainConfig {
    /// Checks every option before any file is read or any model is loaded, so that the command
    /// line, `clip-es run` and Python refuse the same values with the same message: the
    /// training settings ([`TrainOptions::validate`]), the network's shape, the class count
    /// (labels are 8-bit and 255 is "ignore") and the thread count. A DeepLab-v2 started from
    /// random weights diverges on real photos (its batch norm is frozen, as deeplab-pytorch
    /// trains it), so a fresh DeepLab-v2 needs `init` unless `random_init` says otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(2..=MAX_CLASSES).contains(&self.num_classes) {
            return bad(format!(
                "--num-classes (classes, background included) must be in 2..={MAX_CLASSES}, \
                 got {}",
                self.num_classes
            ));
        }
        if let Some(t) = self.threads {
            if !(1..=MAX_THREADS).contains(&t) {
                return bad(format!("--threads must be in 1..={MAX_THREADS}, got {t}"));
            }
        }
        crate::memory::check_memory_limit(self.feature_budget.memory_limit)
            .map_err(TrainError::Config)?;
        // Brings the GPU up once: a missing driver is a bad option, found before any work.
        crate::check_device(&self.device)?;
        match &self.start {
            Start::Resume { iters, .. } => {
                if *iters == Some(0) {
                    return bad("--iters must be at least 1, got 0".into());
                }
                // The other settings come from the checkpoint and are checked when it is read.
                Ok(())
            }
            Start::Fresh { init } | Start::Rerun { init } => {
                self.options.validate(self.arch)?;
                crate::predict::check_scales("--scales", &self.options.augment.scales)?;
                match self.arch {
                    crate::Arch::DeepLabV2 => {
                        self.deeplab.validate().map_err(TrainError::Config)?;
                        let crop = self.options.augment.crop;
                        if let Some(s) = self
                            .deeplab
                            .msc_scales
                            .iter()
                            .find(|&&s| (crop as f64 * s as f64) < 1.0)
                        {
                            return bad(format!(
                                "--crop {crop} at --msc-scales {s} leaves no pixel: give a \
                                 larger --crop or scale"
                            ));
                        }
                        if init.is_none() && !self.random_init {
                            return bad("DeepLab-v2 needs initial weights: give --init with \
                                 deeplab-pytorch's ImageNet/COCO init or a torchvision \
                                 ResNet-101 (a randomly initialised ResNet-101 with frozen batch \
                                 norm diverges to a NaN loss on real photos; --random-init \
                                 starts from random weights anyway, for tests)"
                                .into());
                        }
                        Ok(())
                    }
                    crate::Arch::ClipDecoder => crate::decoder::DecoderConfig {
                        n_classes: self.num_classes,
                        in_dim: 0,
                        hidden: self.decoder_hidden,
                        upsamplings: self.decoder_upsamplings,
                    }
                    .validate()
                    .map_err(TrainError::Config),
                }
            }
        }
    }
}

pub use crate::loss::MAX_CLASSES;
/// The largest sub-batch and the most sub-batches per iteration.
pub const MAX_BATCH: usize = 1024;
/// The largest DeepLab-v2 training crop, in pixels.
pub const MAX_CROP: usize = 4096;
/// The largest random training scale.
pub const MAX_SCALE: f64 = 4.0;
/// The largest clip-decoder crop, in patches.
pub const MAX_GRID_CROP: usize = 1024;
/// The most worker threads.
pub const MAX_THREADS: usize = 4096;

/// The clip-decoder's default base learning rate.
pub const DECODER_LR: f64 = 0.01;
