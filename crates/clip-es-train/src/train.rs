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

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"iters": self.iters, "batch": self.batch, "iter_size": self.iter_size, "lr": self.lr,
            "momentum": self.momentum, "weight_decay": self.weight_decay, "poly_power": self.poly_power,
            "lr_step": self.lr_step, "loss": self.loss.name(), "crop": self.augment.crop, "scales": self.augment.scales,
            "flip": self.augment.flip, "grid_crop": self.grid_crop, "seed": self.seed, "save_every": self.save_every})
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
        let value: f32 = loss
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32")[0];
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                iteration,
                value,
                last_good: None,
            });
        }
        total += value;
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
    let arch = model.arch();
    sgd.step(&mut model.store, &acc, lr, &|n| arch.lr_group(n));
    Ok(total)
}

/// Where the samples come from.
pub enum Source {
    /// Images and masks (DeepLab-v2).
    Images(Vec<Item>),
    /// Cached CLIP features and masks (clip-decoder); `cache` holds `<id>.safetensors`.
    Features { items: Vec<Item>, cache: PathBuf },
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
            Source::Features { items, cache } => {
                let it = &items[idx];
                let (a, b) = read_cached(&cache_path(cache, &it.id))?;
                let flip = opts.augment.flip && rng.uniform() < 0.5;
                let f = if flip { b } else { a };
                let m = read_mask(&it.mask)?;
                let mut l = m.resize_nearest(2 * f.gh, 2 * f.gw);
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
                let mut lab = vec![IGNORE; 4 * ch * cw];
                for y in 0..(2 * ch).min(l.h - 2 * y0) {
                    for xx in 0..(2 * cw).min(l.w - 2 * x0) {
                        lab[y * 2 * cw + xx] = l.data[(2 * y0 + y) * l.w + 2 * x0 + xx];
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
        Source::Features { .. } => (2 * dims.1, 2 * dims.2),
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
    let last = last_good.unwrap_or_else(|| checkpoint_path(out, start));
    if last.is_file() {
        let fin = out.join("final.safetensors");
        std::fs::copy(&last, &fin).map_err(|e| TrainError::io(&fin, e))?;
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

/// The checkpoint of the highest iteration in `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let rd = match std::fs::read_dir(out) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(out, e)),
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, e.path()));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}
