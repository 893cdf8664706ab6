//! The training loop (library entry point of `clip-es train`): deeplab-pytorch's `main.py`
//! `train` (lines 106-279 at 4219467f) with checkpoints that carry the optimizer state, a
//! bit-for-bit resume, a JSONL log, a loss-curve PNG and a guard against non-finite losses.
//!
//! Files: `config.rs` (the settings), `loop.rs` (the loop), `checkpoint.rs` (checkpoints and the
//! run folder); this file holds the stage entry point ([`run`]).

mod checkpoint;
mod config;
mod r#loop;

pub use checkpoint::*;
pub use config::*;
pub use r#loop::*;

use crate::error::{Result, TrainError};
use crate::model::Network;
use crate::sgd::Sgd;
use clip_es_data::progress::Progress;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
pub fn run(config: &TrainConfig, progress: &dyn Progress) -> Result<TrainReport> {
    run_until(config, progress, &|| false)
}

/// [`run`] that asks `stop` between training iterations (see [`train_until`]).
pub fn run_until(
    config: &TrainConfig,
    progress: &dyn Progress,
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
    pool.install(|| run_in_pool(config, progress, stop))
}

fn run_in_pool(
    config: &TrainConfig,
    progress: &dyn Progress,
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
        Start::Fresh { init: Some(p) } => Some((p.clone(), Network::read_weights(p)?)),
        _ => None,
    };
    let mut resumed_from: Option<PathBuf> = None;
    let (mut model, mut sgd, start, clip_model) = match &start {
        Start::Resume { checkpoint, iters } => {
            let (path, (model, tensors, meta)) =
                open_resume_checkpoint(c, checkpoint, &device, progress)?;
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
            progress.message(&format!(
                "resuming {} at iteration {start} (settings from the checkpoint)",
                path.display()
            ));
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
                    Network::deeplab(
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
                Arch::ClipDecoder => Network::decoder(
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
    let load_init = |model: &mut Network, init: Option<(PathBuf, BTreeMap<_, _>)>| -> Result<()> {
        if let Some((init, tensors)) = init {
            let unused = model.load_tensors(&init, tensors, true)?;
            let how = match &model.net {
                Net::DeepLab(n) if n.config.style == Backbone::Torchvision => {
                    "torchvision ResNet: torchvision backbone style, its input normalisation \
                     folded into the stem; "
                }
                _ => "",
            };
            progress.message(&format!(
                "initialised from {} ({how}{} tensors of the file unused)",
                init.display(),
                unused.len()
            ));
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
            progress.start("features", items.len());
            crate::features::cache_all(clip.vision(), &items, &cache, c.feature_budget, &|| {
                progress.advance()
            })?;
            progress.finish();
            let dim = clip.vision().width();
            let current = match &model.net {
                Net::Decoder(d) => d.config.clone(),
                Net::DeepLab(_) => unreachable!("the arch is the decoder's"),
            };
            if current.in_dim == 0 {
                model = Network::decoder(
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
    // Training runs from iteration `start` (exclusive) to `opts.iters`.
    progress.start("train", opts.iters.saturating_sub(start));
    let meta = serde_json::json!({ "clip_model": clip_model });
    let checkpoint = train_until(
        &mut model,
        &mut sgd,
        &source,
        &opts,
        &c.out,
        start,
        meta,
        &mut |record| progress.iteration(record),
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
