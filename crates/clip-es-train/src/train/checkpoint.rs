//! The checkpoints and the run folder: checkpoint names and listing, restoring the optimizer
//! state, the stage manifest a rerun is compared against, clearing a run and stale partial
//! files.

use super::{Start, TrainConfig, TrainOptions};
use crate::error::{Result, TrainError};
use crate::model::Network;
use crate::sgd::Sgd;
use burn::tensor::Device;
use clip_es_data::progress::Progress;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn checkpoint_path(out: &Path, iteration: usize) -> PathBuf {
    out.join(format!("checkpoint-{iteration:06}.safetensors"))
}

/// Restores the optimizer state and the iteration of a checkpoint written by [`train`](super::train).
pub fn resume_state(
    model: &Network,
    tensors: &BTreeMap<String, crate::params::HostTensor>,
    meta: &serde_json::Value,
    opts: &TrainOptions,
) -> (Sgd, usize) {
    let mut sgd = Sgd::new(opts.momentum, opts.weight_decay);
    sgd.load_state(model, tensors);
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
pub(super) fn clear_run(config: &TrainConfig) -> Result<()> {
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

/// Removes the temporary files ([`clip_es_data::atomic::temp_path`]) that an interrupted or
/// failed write of a checkpoint left in `out` (a full disk, a kill): never a finished checkpoint.
pub(super) fn remove_stale_parts(out: &Path) -> Result<()> {
    let is_checkpoint = |n: &str| n.starts_with("checkpoint-") || n.starts_with("final.");
    clip_es_data::atomic::remove_stale_partials_where(out, is_checkpoint)
        .map(|_| ())
        .map_err(|e| TrainError::io(out, e))
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

/// What [`run`](super::run) checks before any work about the run already in `config.out`: a new run
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

/// A checkpoint as [`Network::open`] reads it: the model, all its tensors, its metadata.
type OpenedCheckpoint = (
    Network,
    BTreeMap<String, crate::params::HostTensor>,
    serde_json::Value,
);

/// The checkpoint to resume from: the one given, or the latest in `out` that can be read. A
/// latest checkpoint that cannot be read (a write cut short by a full disk or a crash) is
/// skipped with a warning for the one before it; when none can be read the error names the
/// latest and says what to do.
pub(super) fn open_resume_checkpoint(
    c: &TrainConfig,
    checkpoint: &Option<PathBuf>,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(PathBuf, OpenedCheckpoint)> {
    if let Some(p) = checkpoint {
        return Ok((p.clone(), Network::open(p, device)?));
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
        match Network::open(path, device) {
            Ok(opened) => {
                if let Some(e) = &first_error {
                    progress.message(&format!(
                        "warning: {e}; resuming from the previous checkpoint {} instead",
                        path.display()
                    ));
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
