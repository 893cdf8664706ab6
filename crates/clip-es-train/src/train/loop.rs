//! The training loop: batches from images or cached features ([`make_batch`]), one SGD step
//! of the loss ([`train_step`]) and the iterations with their log, curve and checkpoints
//! ([`train_until`]).

use super::{checkpoint_path, TrainOptions};
use crate::data::{augment, load_bgr, read_mask, Item, Sampler};
use crate::error::{Result, TrainError};
use crate::features::{cache_path, read_cached};
use crate::loss::{masked_cross_entropy, Labels, LossKind, IGNORE};
use crate::model::Network;
use crate::plot::plot_loss;
use crate::sgd::{poly_lr, Sgd};
use burn::tensor::{Device, Tensor, TensorData};
use clip_es_data::progress::IterationRecord;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One (sub-)batch: inputs without autodiff and their labels.
pub struct Batch {
    pub x: Tensor<4>,
    pub labels: Labels,
}

/// The value of a one-element tensor, or the error that stops training before a step when it is
/// NaN or infinite (the weights would turn to NaN and be saved). A GPU reports the failures of
/// the queued work (its memory exhausted, a buffer over its limit) when the loss is read: they
/// stop the training with the device's reason instead of a panic.
fn finite_scalar(t: Tensor<1>, iteration: usize) -> Result<f32> {
    let data = t.try_into_data().map_err(|e| {
        TrainError::Config(format!(
            "iteration {iteration}: {}",
            clip_es_gpu::device_failure(
                &e.to_string(),
                "lower --batch or --crop, or train with --device flex"
            )
        ))
    })?;
    let value: f32 = data
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Config(format!("the device returned no f32 loss ({e:?})")))?[0];
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
    model: &mut Network,
    sgd: &mut Sgd,
    batches: &[Batch],
    lr: f64,
    kind: LossKind,
    iteration: usize,
) -> Result<f32> {
    // The trainable parameters as autodiff leaves; the loss of every sub-batch is
    // differentiated with respect to them.
    let net = model.net.with_autodiff();
    let mut acc: BTreeMap<String, Tensor<1>> = BTreeMap::new();
    let mut total = 0f32;
    let device = model.device.clone();
    for b in batches {
        let mut loss: Option<Tensor<1>> = None;
        for logits in net.forward_train(b.x.clone()) {
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
        for (k, g) in net.gradients(&grads) {
            let e = acc.remove(&k);
            acc.insert(
                k,
                match e {
                    None => g,
                    Some(a) => a + g,
                },
            );
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
    sgd.step(model, &acc, lr, &|n| arch.lr_group(n));
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

/// Trains `model` from iteration `start` (0, or the iteration of the checkpoint it was resumed
/// from, whose optimizer state `sgd` then holds) to `opts.iters`, writing into `out`:
/// `train.jsonl` (one line per iteration), `loss.png`, `checkpoint-NNNNNN.safetensors` every
/// `save_every` iterations and at the end, and `final.safetensors`. Returns the last checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Network,
    sgd: &mut Sgd,
    source: &Source,
    opts: &TrainOptions,
    out: &Path,
    start: usize,
    extra_meta: serde_json::Value,
    progress: &mut dyn FnMut(&IterationRecord),
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
    model: &mut Network,
    sgd: &mut Sgd,
    source: &Source,
    opts: &TrainOptions,
    out: &Path,
    start: usize,
    extra_meta: serde_json::Value,
    progress: &mut dyn FnMut(&IterationRecord),
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
    let device = model.device.clone();
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
        progress(&IterationRecord {
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
            model.save(&path, sgd.state(model), m)?;
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
        clip_es_data::atomic::write_atomic(&fin, |tmp| std::fs::copy(&last, tmp))
            .map_err(|e| TrainError::io(&fin, e))?;
    }
    Ok(last)
}
