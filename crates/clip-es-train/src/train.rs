//! The training loop (library entry point of `clip-es train`): deeplab-pytorch's `main.py`
//! `train` (lines 106-279 at 4219467f) with checkpoints that carry the optimizer state, a
//! bit-for-bit resume, a JSONL log, a loss-curve PNG and a guard against non-finite losses.

use crate::data::{augment, load_bgr, read_mask, Augment, Item, Sampler};
use crate::error::{Result, TrainError};
use crate::features::{cache_path, read_cached};
use crate::loss::{masked_cross_entropy, Labels, LossKind, IGNORE};
use crate::model::Model;
use crate::plot::plot_loss;
use crate::sgd::{poly_lr, Sgd};
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One (sub-)batch: inputs without autodiff and their labels.
pub struct Batch {
    pub x: Tensor<4>,
    pub labels: Labels,
}

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
    pub augment: Augment,
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
            augment: Augment {
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
    /// The settings stored in a checkpoint by [`train`].
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
            augment: Augment {
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

/// The value of a one-element tensor, or the error that stops training before a step when it is
/// NaN or infinite (the weights would turn to NaN and be saved).
fn finite_scalar(t: Tensor<1>, iteration: usize) -> Result<f32> {
    let value: f32 = t
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32")[0];
    if value.is_finite() {
        Ok(value)
    } else {
        Err(TrainError::NonFinite {
            iteration,
            value,
            last_good: None,
        })
    }
}

/// The gradient of the loss over `batches` (averaged, as `iter_loss /= ITER_SIZE`), then one SGD
/// step at `lr`. Returns the loss, or an error before touching the weights if it is not finite.
pub fn train_step(
    model: &mut Model,
    sgd: &mut Sgd,
    batches: &[Batch],
    lr: f64,
    kind: LossKind,
    iteration: usize,
) -> Result<f32> {
    let v: BTreeMap<String, Tensor<1>> = model
        .store
        .trainable
        .iter()
        .map(|(k, p)| (k.clone(), p.value.clone().autodiff().require_grad()))
        .collect();
    let mut acc: BTreeMap<String, Tensor<1>> = BTreeMap::new();
    let mut total = 0f32;
    let device = model.store.device.clone();
    for b in batches {
        let mut loss: Option<Tensor<1>> = None;
        for logits in model.forward_train(&v, b.x.clone()) {
            if let Some(l) = masked_cross_entropy(logits, &b.labels, kind, &device) {
                loss = Some(match loss {
                    None => l,
                    Some(s) => s + l,
                });
            }
        }
        let Some(loss) = loss else { continue };
        let loss = loss.div_scalar(batches.len() as f32);
        total += finite_scalar(loss.clone(), iteration)?;
        let grads = loss.backward();
        for (k, t) in &v {
            if let Some(g) = t.grad(&grads) {
                let g = g.without_autodiff();
                let e = acc.remove(k);
                acc.insert(
                    k.clone(),
                    match e {
                        None => g,
                        Some(a) => a + g,
                    },
                );
            }
        }
    }
    // A finite loss can still have an infinite gradient, which would turn the weights to NaN
    // and be saved: one reduction over every gradient catches it before the step.
    let grad_sum: Option<Tensor<1>> = acc
        .values()
        .map(|g| g.clone().abs().sum())
        .reduce(|a, b| a + b);
    if let Some(sum) = grad_sum {
        finite_scalar(sum, iteration)?;
    }
    let arch = model.arch();
    sgd.step(&mut model.store, &acc, lr, &|n| arch.lr_group(n));
    Ok(total)
}

/// Where the samples come from.
pub enum Source {
    /// Images and masks (DeepLab-v2).
    Images(Vec<Item>),
    /// Cached CLIP features and masks (clip-decoder); `cache` holds `<id>.safetensors`; the
    /// labels are taken at `label_scale` times the patch grid (the decoder's logit size).
    Features {
        items: Vec<Item>,
        cache: PathBuf,
        label_scale: usize,
    },
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Images(i) => i.len(),
            Source::Features { items, .. } => items.len(),
        }
    }
}

/// Builds the sub-batch number `sub` (0-based over the run) of `opts.batch` samples.
pub fn make_batch(
    source: &Source,
    sampler: &mut Sampler,
    opts: &TrainOptions,
    sub: u64,
    device: &Device,
) -> Result<Batch> {
    let mut xs = Vec::new();
    let mut labs = Vec::new();
    let mut dims = (0, 0, 0);
    for j in 0..opts.batch as u64 {
        let (idx, mut rng) = sampler.item(sub * opts.batch as u64 + j);
        match source {
            Source::Images(items) => {
                let it = &items[idx];
                let (img, h, w) = load_bgr(&it.image)?;
                let m = read_mask(&it.mask)?;
                crate::data::check_mask(&it.mask, &m, (h, w), usize::MAX)?;
                let (x, l) = augment(&img, h, w, &m, &opts.augment, &mut rng);
                dims = (3, opts.augment.crop, opts.augment.crop);
                xs.extend(x);
                labs.extend(l);
            }
            Source::Features {
                items,
                cache,
                label_scale,
            } => {
                let r = *label_scale;
                let it = &items[idx];
                let (a, b) = read_cached(&cache_path(cache, &it.id))?;
                let flip = opts.augment.flip && rng.uniform() < 0.5;
                let f = if flip { b } else { a };
                let m = read_mask(&it.mask)?;
                let mut l = m.resize_nearest(r * f.gh, r * f.gw);
                if flip {
                    for row in l.data.chunks_mut(l.w) {
                        row.reverse();
                    }
                }
                let (ch, cw) = if opts.grid_crop == 0 {
                    (f.gh, f.gw)
                } else {
                    (opts.grid_crop, opts.grid_crop)
                };
                let y0 = rng.below(f.gh.saturating_sub(ch) + 1);
                let x0 = rng.below(f.gw.saturating_sub(cw) + 1);
                let mut x = vec![0f32; f.dim * ch * cw];
                for c in 0..f.dim {
                    for y in 0..ch.min(f.gh - y0) {
                        for xx in 0..cw.min(f.gw - x0) {
                            x[(c * ch + y) * cw + xx] =
                                f.data[(c * f.gh + y0 + y) * f.gw + x0 + xx];
                        }
                    }
                }
                let mut lab = vec![IGNORE; r * r * ch * cw];
                for y in 0..(r * ch).min(l.h - r * y0) {
                    for xx in 0..(r * cw).min(l.w - r * x0) {
                        lab[y * r * cw + xx] = l.data[(r * y0 + y) * l.w + r * x0 + xx];
                    }
                }
                if j > 0 && dims != (f.dim, ch, cw) {
                    return Err(TrainError::Config(
                        "clip-decoder batches above 1 need --grid-crop > 0".into(),
                    ));
                }
                dims = (f.dim, ch, cw);
                xs.extend(x);
                labs.extend(lab);
            }
        }
    }
    let n = opts.batch;
    let (lh, lw) = match source {
        Source::Images(_) => (dims.1, dims.2),
        Source::Features { label_scale, .. } => (label_scale * dims.1, label_scale * dims.2),
    };
    Ok(Batch {
        x: Tensor::<4>::from_data(TensorData::new(xs, [n, dims.0, dims.1, dims.2]), device),
        labels: Labels {
            n,
            h: lh,
            w: lw,
            data: labs,
        },
    })
}

/// Progress of a run, for the front end's progress bar.
#[derive(Clone, Debug)]
pub struct Progress {
    pub iteration: usize,
    pub iters: usize,
    pub loss: f32,
    pub lr: f64,
    pub seconds: f64,
}

pub fn checkpoint_path(out: &Path, iteration: usize) -> PathBuf {
    out.join(format!("checkpoint-{iteration:06}.safetensors"))
}

/// Trains `model` from iteration `start` (0, or the iteration of the checkpoint it was resumed
/// from, whose optimizer state `sgd` then holds) to `opts.iters`, writing into `out`:
/// `train.jsonl` (one line per iteration), `loss.png`, `checkpoint-NNNNNN.safetensors` every
/// `save_every` iterations and at the end, and `final.safetensors`. Returns the last checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Model,
    sgd: &mut Sgd,
    source: &Source,
    opts: &TrainOptions,
    out: &Path,
    start: usize,
    extra_meta: serde_json::Value,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf> {
    train_until(
        model,
        sgd,
        source,
        opts,
        out,
        start,
        extra_meta,
        progress,
        &|| false,
    )
}

/// [`train`] that asks `stop` before each iteration and fails with [`TrainError::Stopped`]
/// once it says yes, leaving the checkpoints and log lines written so far as they are (how a
/// front end lets the user interrupt training; the run resumes from the last checkpoint).
#[allow(clippy::too_many_arguments)]
pub fn train_until(
    model: &mut Model,
    sgd: &mut Sgd,
    source: &Source,
    opts: &TrainOptions,
    out: &Path,
    start: usize,
    extra_meta: serde_json::Value,
    progress: &mut dyn FnMut(&Progress),
    stop: &dyn Fn() -> bool,
) -> Result<PathBuf> {
    if source.len() == 0 {
        return Err(TrainError::Config("no training images".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let log_path = out.join("train.jsonl");
    // Keep the log lines of the iterations before `start` (a resumed run rewrites the rest).
    let mut history: Vec<(usize, f32)> = Vec::new();
    let mut kept = String::new();
    if start > 0 {
        if let Ok(text) = std::fs::read_to_string(&log_path) {
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    let it = v["iter"].as_u64().unwrap_or(0) as usize;
                    if it <= start {
                        history.push((it, v["loss"].as_f64().unwrap_or(f64::NAN) as f32));
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
            }
        }
    }
    std::fs::write(&log_path, kept).map_err(|e| TrainError::io(&log_path, e))?;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| TrainError::io(&log_path, e))?;
    let device = model.store.device.clone();
    let mut sampler = Sampler::new(opts.seed, source.len());
    let mut last_good: Option<PathBuf> = None;
    let t0 = std::time::Instant::now();
    let mut meta = extra_meta;
    meta["options"] = opts.to_json();
    for it in start + 1..=opts.iters {
        if stop() {
            return Err(TrainError::Stopped {
                iteration: it - 1,
                last_good,
            });
        }
        let lr = poly_lr(opts.lr, it, opts.iters, opts.lr_step, opts.poly_power);
        let mut batches = Vec::with_capacity(opts.iter_size);
        for a in 0..opts.iter_size {
            let sub = ((it - 1) * opts.iter_size + a) as u64;
            batches.push(make_batch(source, &mut sampler, opts, sub, &device)?);
        }
        let loss = match train_step(model, sgd, &batches, lr, opts.loss, it) {
            Ok(l) => l,
            Err(TrainError::NonFinite {
                iteration, value, ..
            }) => {
                return Err(TrainError::NonFinite {
                    iteration,
                    value,
                    last_good,
                })
            }
            Err(e) => return Err(e),
        };
        let secs = t0.elapsed().as_secs_f64();
        writeln!(
            log,
            "{}",
            serde_json::json!({"iter": it, "loss": loss, "lr": lr, "seconds": secs})
        )
        .map_err(|e| TrainError::io(&log_path, e))?;
        history.push((it, loss));
        progress(&Progress {
            iteration: it,
            iters: opts.iters,
            loss,
            lr,
            seconds: secs,
        });
        if it % opts.save_every.max(1) == 0 || it == opts.iters {
            let path = checkpoint_path(out, it);
            let mut m = meta.clone();
            m["iteration"] = it.into();
            model.save(&path, sgd.state(&model.store), m)?;
            last_good = Some(path);
            plot_loss(&out.join("loss.png"), &history)?;
        }
    }
    if last_good.is_none() {
        // Nothing trained (a resumed run already at `opts.iters`): the curve of the kept log,
        // so that every file the run reports exists.
        plot_loss(&out.join("loss.png"), &history)?;
    }
    let last = last_good.unwrap_or_else(|| checkpoint_path(out, start));
    if last.is_file() {
        // Copied under a temporary name, then renamed: a full disk leaves no partial file.
        let fin = out.join("final.safetensors");
        let tmp = out.join("final.safetensors.part");
        let copied = std::fs::copy(&last, &tmp).and_then(|_| std::fs::rename(&tmp, &fin));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(TrainError::io(&fin, e));
        }
    }
    Ok(last)
}

/// Restores the optimizer state and the iteration of a checkpoint written by [`train`].
pub fn resume_state(
    model: &Model,
    tensors: &BTreeMap<String, crate::params::HostTensor>,
    meta: &serde_json::Value,
    opts: &TrainOptions,
) -> (Sgd, usize) {
    let mut sgd = Sgd::new(opts.momentum, opts.weight_decay);
    sgd.load_state(&model.store, tensors);
    (sgd, meta["iteration"].as_u64().unwrap_or(0) as usize)
}

/// The checkpoints `checkpoint-NNNNNN.safetensors` in `out`, highest iteration first.
pub fn checkpoints(out: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(out) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(out, e)),
    };
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            found.push((n, e.path()));
        }
    }
    found.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The checkpoint of the highest iteration in `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    Ok(checkpoints(out)?.into_iter().next())
}

/// Whether `out` holds a training run: a checkpoint or `final.safetensors`.
pub fn holds_run(out: &Path) -> bool {
    out.join("final.safetensors").is_file() || latest_checkpoint(out).ok().flatten().is_some()
}

/// The files of a run that [`train`] writes into `out` (and the default feature cache), which
/// `--overwrite` removes before a new run: nothing else in the folder is touched.
fn clear_run(config: &TrainConfig) -> Result<()> {
    let out = &config.out;
    let mut files: Vec<PathBuf> = checkpoints(out)?;
    files.extend(
        ["final.safetensors", "train.jsonl", "loss.png"]
            .iter()
            .map(|f| out.join(f)),
    );
    files.push(train_manifest_path(out));
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrainError::io(&f, e)),
        }
    }
    if config.features.is_none() {
        let cache = out.join("features");
        match std::fs::remove_dir_all(&cache) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrainError::io(&cache, e)),
        }
    }
    Ok(())
}

/// Removes the temporary files (`*.safetensors.part`) that an interrupted or failed write of a
/// checkpoint left in `out` (a full disk, a kill): they are never a finished checkpoint.
fn remove_stale_parts(out: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors.part")
            && (name.starts_with("checkpoint-") || name.starts_with("final."))
        {
            std::fs::remove_file(e.path()).map_err(|err| TrainError::io(e.path(), err))?;
        }
    }
    Ok(())
}

/// The name of the training stage in its manifest.
pub const STAGE: &str = "train";

fn train_manifest_path(out: &Path) -> PathBuf {
    out.join(clip_es_data::manifest::file_name(STAGE))
}

/// The settings of a run that change its outcome, as recorded in the stage manifest of its
/// output folder: the network, the class count, the initial weights (by fingerprint), the CLIP
/// model of the decoder, and every training option except the iteration count (which a rerun
/// may raise to continue) and the checkpoint interval.
pub fn manifest(config: &TrainConfig) -> Result<clip_es_data::manifest::Manifest> {
    let c = config;
    let mut m = clip_es_data::manifest::Manifest::new(STAGE);
    m.set("arch", c.arch.name());
    m.set("num_classes", c.num_classes);
    let init = match &c.start {
        Start::Fresh { init: Some(p) } | Start::Rerun { init: Some(p) } => {
            clip_es_data::manifest::model_identity(&p.to_string_lossy())
                .map_err(TrainError::Config)?
        }
        _ => "none".into(),
    };
    m.set("init", init);
    if let serde_json::Value::Object(o) = c.options.to_json() {
        for (k, v) in o {
            if k != "iters" && k != "save_every" {
                m.set(&k, v);
            }
        }
    }
    match c.arch {
        crate::Arch::DeepLabV2 => {
            let d = &c.deeplab;
            m.set("width", d.width);
            m.set("blocks", format!("{:?}", d.blocks));
            m.set("rates", format!("{:?}", d.rates));
            m.set("msc_scales", format!("{:?}", d.msc_scales));
        }
        crate::Arch::ClipDecoder => {
            m.set("hidden", c.decoder_hidden);
            m.set("upsamplings", c.decoder_upsamplings);
            m.set(
                "model",
                clip_es_data::manifest::model_identity(&c.clip_model)
                    .map_err(TrainError::Config)?,
            );
        }
    }
    Ok(m)
}

/// What [`run`] checks before any work about the run already in `config.out`: a new run
/// (`Start::Fresh`) into a folder that holds one is refused unless `config.overwrite`, so that
/// the old checkpoints never mix with the new run's; `Start::Rerun` continues it only if it was
/// made with these same settings. Cheap (no model is loaded); `clip-es run` calls it for its
/// training stage before its first stage.
pub fn check_rerun(config: &TrainConfig) -> Result<()> {
    let out = &config.out;
    if config.overwrite || !holds_run(out) {
        return Ok(());
    }
    match &config.start {
        Start::Fresh { .. } => Err(TrainError::Config(format!(
            "{} already holds a training run (checkpoints, final.safetensors): use --resume to continue it, --overwrite to replace it, or another --out",
            out.display()
        ))),
        Start::Rerun { .. } => manifest(config)?
            .check(out, false, true, &[])
            .map_err(TrainError::Config),
        Start::Resume { .. } => Ok(()),
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
    /// error naming them, see [`check_rerun`]); start fresh from `init` if it holds none. What a
    /// rerun of `clip-es run --train` does.
    Rerun { init: Option<PathBuf> },
}

/// A checkpoint as [`Model::open`] reads it: the model, all its tensors, its metadata.
type OpenedCheckpoint = (
    Model,
    BTreeMap<String, crate::params::HostTensor>,
    serde_json::Value,
);

/// The checkpoint to resume from: the one given, or the latest in `out` that can be read. A
/// latest checkpoint that cannot be read (a write cut short by a full disk or a crash) is
/// skipped with a warning for the one before it; when none can be read the error names the
/// latest and says what to do.
fn open_resume_checkpoint(
    c: &TrainConfig,
    checkpoint: &Option<PathBuf>,
    device: &Device,
    events: &(dyn Fn(Event) + Sync),
) -> Result<(PathBuf, OpenedCheckpoint)> {
    if let Some(p) = checkpoint {
        return Ok((p.clone(), Model::open(p, device)?));
    }
    let all = checkpoints(&c.out)?;
    let Some(latest) = all.first() else {
        return Err(TrainError::Config(format!(
            "resume: no checkpoint in {}",
            c.out.display()
        )));
    };
    let mut first_error = None;
    for path in &all {
        match Model::open(path, device) {
            Ok(opened) => {
                if let Some(e) = &first_error {
                    events(Event::Note(format!(
                        "warning: {e}; resuming from the previous checkpoint {} instead",
                        path.display()
                    )));
                }
                return Ok((path.clone(), opened));
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
            }
        }
    }
    Err(TrainError::Config(format!(
        "{}; no checkpoint in {} can be read: delete the broken ones, or start a new run with --overwrite",
        first_error.unwrap_or_default(),
        latest.parent().unwrap_or(&c.out).display()
    )))
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
    /// clip-decoder feature cache [default: `<out>/features`].
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

/// The most classes (background included): labels are 8-bit and 255 means "ignore".
pub const MAX_CLASSES: usize = 255;
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

/// What a run tells its front end.
#[derive(Debug)]
pub enum Event<'a> {
    /// A line worth showing (initialisation, resumption).
    Note(String),
    /// The clip-decoder's feature cache is being filled for this many images.
    FeaturesStart(usize),
    /// One image's features are cached (or were already).
    FeatureDone,
    FeaturesEnd,
    /// Training runs from iteration `from` (exclusive) to `to`.
    TrainStart {
        from: usize,
        to: usize,
    },
    Iteration(&'a Progress),
}

/// What [`run`] produced.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The checkpoint of the last iteration (also copied to `final.safetensors`).
    pub checkpoint: PathBuf,
    pub final_checkpoint: PathBuf,
    pub log: PathBuf,
    pub curve: PathBuf,
    /// Iteration the run started from and the last one.
    pub start: usize,
    pub iters: usize,
}

/// The training stage: builds or restores the network, checks every training pair, caches the
/// clip-decoder's CLIP features, then runs [`train`] on a pool of `config.threads` threads.
pub fn run(config: &TrainConfig, events: &(dyn Fn(Event) + Sync)) -> Result<TrainReport> {
    run_until(config, events, &|| false)
}

/// [`run`] that asks `stop` between training iterations (see [`train_until`]).
pub fn run_until(
    config: &TrainConfig,
    events: &(dyn Fn(Event) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<TrainReport> {
    config.validate()?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = config.threads {
        pool = pool.num_threads(t);
    }
    let pool = pool
        .build()
        .map_err(|e| TrainError::Config(format!("thread pool: {e}")))?;
    pool.install(|| run_in_pool(config, events, stop))
}

fn run_in_pool(
    config: &TrainConfig,
    events: &(dyn Fn(Event) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<TrainReport> {
    use crate::decoder::DecoderConfig;
    use crate::deeplab::Backbone;
    use crate::model::Net;
    use crate::Arch;
    let c = config;
    let device = crate::device(&c.device)?;
    check_rerun(c)?;
    clip_es_data::probe_dir(&c.out).map_err(TrainError::Config)?;
    remove_stale_parts(&c.out)?;
    // A rerun continues the run in `out` (its settings were checked just above) or starts one.
    let start = match &c.start {
        Start::Rerun { init } if c.overwrite || !holds_run(&c.out) => {
            Start::Fresh { init: init.clone() }
        }
        Start::Rerun { .. } => Start::Resume {
            checkpoint: None,
            iters: Some(c.options.iters),
        },
        other => other.clone(),
    };
    if let Start::Fresh { .. } = start {
        if c.overwrite {
            clear_run(c)?;
        }
        // The record of what makes this run's files, for the next rerun to compare against.
        manifest(c)?.write(&c.out).map_err(TrainError::Config)?;
    }
    let mut opts = c.options.clone();
    // The initial weights, read once: a DeepLab-v2 takes its backbone style from them.
    let init = match &start {
        Start::Fresh { init: Some(p) } => Some((p.clone(), Model::read_weights(p)?)),
        _ => None,
    };
    let mut resumed_from: Option<PathBuf> = None;
    let (mut model, mut sgd, start, clip_model) = match &start {
        Start::Resume { checkpoint, iters } => {
            let (path, (model, tensors, meta)) =
                open_resume_checkpoint(c, checkpoint, &device, events)?;
            if model.arch() != c.arch {
                return Err(TrainError::Config(format!(
                    "{} is a {} checkpoint, but the run asks for {}: resume it with its own architecture, or start a new run in another --out (or with --overwrite)",
                    path.display(),
                    model.arch().name(),
                    c.arch.name()
                )));
            }
            opts =
                TrainOptions::from_json(&meta["options"]).ok_or_else(|| TrainError::Weights {
                    path: path.clone(),
                    message: "no run settings".into(),
                })?;
            if let Some(i) = iters {
                opts.iters = *i;
            }
            opts.validate(model.arch())
                .map_err(|e| TrainError::Weights {
                    path: path.clone(),
                    message: format!("its run settings: {e}"),
                })?;
            let (sgd, start) = resume_state(&model, &tensors, &meta, &opts);
            if start > opts.iters {
                return Err(TrainError::Config(format!(
                    "{} is at iteration {start}, beyond --iters {}: give --iters {start} or more",
                    path.display(),
                    opts.iters
                )));
            }
            events(Event::Note(format!(
                "resuming {} at iteration {start} (settings from the checkpoint)",
                path.display()
            )));
            resumed_from = Some(path.clone());
            let clip = meta["clip_model"]
                .as_str()
                .unwrap_or(&c.clip_model)
                .to_string();
            (model, sgd, start, clip)
        }
        Start::Fresh { .. } | Start::Rerun { .. } => {
            let model = match c.arch {
                Arch::DeepLabV2 => {
                    // torchvision ImageNet weights need torchvision's stride/dilation placement.
                    let style = match &init {
                        Some((_, t)) if crate::torchvision::is_torchvision(t.keys()) => {
                            Backbone::Torchvision
                        }
                        _ => c.deeplab.style,
                    };
                    Model::deeplab(
                        crate::deeplab::DeepLabConfig {
                            n_classes: c.num_classes,
                            style,
                            ..c.deeplab.clone()
                        },
                        &device,
                        opts.seed,
                    )
                }
                // The feature width is known once the CLIP model is loaded (below).
                Arch::ClipDecoder => Model::decoder(
                    DecoderConfig {
                        n_classes: c.num_classes,
                        in_dim: 0,
                        hidden: c.decoder_hidden,
                        upsamplings: c.decoder_upsamplings,
                    },
                    &device,
                    opts.seed,
                ),
            };
            let sgd = Sgd::new(opts.momentum, opts.weight_decay);
            (model, sgd, 0, c.clip_model.clone())
        }
    };
    let load_init = |model: &mut Model, init: Option<(PathBuf, BTreeMap<_, _>)>| -> Result<()> {
        if let Some((init, tensors)) = init {
            let unused = model.load_tensors(&init, tensors, true)?;
            let how = match &model.net {
                Net::DeepLab(n) if n.config.style == Backbone::Torchvision => {
                    "torchvision ResNet: torchvision backbone style, its input normalisation \
                     folded into the stem; "
                }
                _ => "",
            };
            events(Event::Note(format!(
                "initialised from {} ({how}{} tensors of the file unused)",
                init.display(),
                unused.len()
            )));
        }
        Ok(())
    };
    let items = crate::data::load_items(&c.images, &c.masks, &c.split, model.n_classes())?;
    let source = match model.arch() {
        Arch::DeepLabV2 => {
            load_init(&mut model, init)?;
            Source::Images(items)
        }
        Arch::ClipDecoder => {
            let cache = c.features.clone().unwrap_or_else(|| c.out.join("features"));
            let clip = clip_es_model::Clip::load(&clip_model)
                .map_err(|e| TrainError::Config(format!("loading CLIP `{clip_model}`: {e:#}")))?;
            events(Event::FeaturesStart(items.len()));
            crate::features::cache_all(clip.vision(), &items, &cache, c.feature_budget, &|| {
                events(Event::FeatureDone)
            })?;
            events(Event::FeaturesEnd);
            let dim = clip.vision().width();
            let current = match &model.net {
                Net::Decoder(d) => d.config.clone(),
                Net::DeepLab(_) => unreachable!("the arch is the decoder's"),
            };
            if current.in_dim == 0 {
                model = Model::decoder(
                    DecoderConfig {
                        in_dim: dim,
                        ..current
                    },
                    &device,
                    opts.seed,
                );
                load_init(&mut model, init)?;
            } else if current.in_dim != dim {
                return Err(TrainError::Config(format!(
                    "the checkpoint's decoder takes {}-d features, `{clip_model}` gives {dim}",
                    current.in_dim
                )));
            }
            let label_scale = match &model.net {
                Net::Decoder(d) => d.config.logit_scale(),
                Net::DeepLab(_) => unreachable!("the arch is the decoder's"),
            };
            Source::Features {
                items,
                cache,
                label_scale,
            }
        }
    };
    events(Event::TrainStart {
        from: start,
        to: opts.iters,
    });
    let meta = serde_json::json!({ "clip_model": clip_model });
    let checkpoint = train_until(
        &mut model,
        &mut sgd,
        &source,
        &opts,
        &c.out,
        start,
        meta,
        &mut |p| events(Event::Iteration(p)),
        stop,
    )?;
    let final_checkpoint = c.out.join("final.safetensors");
    let checkpoint = match resumed_from {
        // Nothing was trained and the checkpoint resumed from lies outside `out`: it is the
        // result, and `final.safetensors` its copy.
        Some(from) if !checkpoint.is_file() => {
            std::fs::copy(&from, &final_checkpoint)
                .map_err(|e| TrainError::io(&final_checkpoint, e))?;
            from
        }
        _ => checkpoint,
    };
    Ok(TrainReport {
        checkpoint,
        final_checkpoint,
        log: c.out.join("train.jsonl"),
        curve: c.out.join("loss.png"),
        start,
        iters: opts.iters,
    })
}
