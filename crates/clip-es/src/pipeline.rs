//! The whole CLIP-ES pipeline as one call ([`run`], what `clip-es run` and Python's
//! `clip_es.run` do; docs/algorithm.md): the CAM stage into `<out>/cams`, the pseudo-mask stage
//! into `<out>/masks`, then with ground truth the evaluation of the CAMs and of the masks. With
//! [`Stage3Config`], stage three follows: the network trained on the pseudo masks into
//! `<out>/train`, its predictions into `<out>/predictions`, and with ground truth their
//! evaluation. Each stage gets its own configuration ([`PipelineConfig::stages`]) and runs its
//! own library entry point, so it is resumable the same way as alone.

use crate::cams::{CamSettings, CamsConfig, CamsReport, DatasetConfig};
use crate::classes::ClassSet;
use crate::eval::{EvalConfig, EvalReport, Prediction, UnlabelledPolicy};
use crate::masks::{CrfParams, MaskOptions, MasksConfig, MasksReport};
use crate::predict::{PredictConfig, PredictReport};
use crate::progress::{check_threads, Progress};
use clip_es_image::ExifOrientation;
use clip_es_train::train::{Start, TrainConfig, TrainOptions, TrainReport};
use clip_es_train::Arch;
use std::path::PathBuf;

/// Stage three inside the pipeline (the full set of training settings is
/// [`TrainConfig`]'s; the rest keep its defaults).
#[derive(Clone, Debug)]
pub struct Stage3Config {
    /// The network trained on the pseudo masks.
    pub arch: Arch,
    /// Training iterations (`None`: [`TrainOptions::default`]'s).
    pub iters: Option<usize>,
    /// Base learning rate (`None`: the architecture's default, as [`TrainConfig::new`] sets it).
    pub lr: Option<f64>,
    /// Images per sub-batch.
    pub batch: usize,
    /// Initial weights of the network.
    pub init: Option<PathBuf>,
    /// Checkpoint every this many iterations.
    pub save_every: usize,
    /// The images to predict (`None`: the pipeline's split).
    pub predict_split: Option<PathBuf>,
    /// Refine the predictions with the dense CRF.
    pub predict_crf: bool,
    /// Compute device of stage three.
    pub device: String,
}

impl Stage3Config {
    /// The training stage's defaults ([`TrainOptions::default`], [`TrainConfig::new`]).
    pub fn new(arch: Arch) -> Self {
        let options = TrainOptions::default();
        Stage3Config {
            arch,
            iters: None,
            lr: None,
            batch: options.batch,
            init: None,
            save_every: options.save_every,
            predict_split: None,
            predict_crf: false,
            device: default_device(),
        }
    }
}

/// The compute device stage three uses unless told otherwise.
pub fn default_device() -> String {
    TrainConfig::new(
        Arch::ClipDecoder,
        PathBuf::new(),
        PathBuf::new(),
        PathBuf::new(),
        PathBuf::new(),
    )
    .device
}

/// The pipeline's settings: those of every stage, shared ones given once.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Which images and labels (`split` or `labels` names the ids).
    pub data: DatasetConfig,
    pub classes: ClassSet,
    /// A Hugging Face id, a local directory or file, or an OpenAI name.
    pub model: String,
    /// The CAM settings; `max_side` and `memory_limit` also bound the masks stage and stage
    /// three.
    pub settings: CamSettings,
    /// EXIF orientation tags: one pixel grid in every stage.
    pub exif: ExifOrientation,
    /// The mask settings; `cam_kind` also says which CAMs the CAM evaluation uses.
    pub mask: MaskOptions,
    /// Masks as indexed PNGs with the VOC palette.
    pub palette: bool,
    /// Also write the masks' confidence maps into this directory.
    pub save_confidence: Option<PathBuf>,
    /// Ground-truth masks (`<id>.png`): evaluate the CAMs, the masks (and the predictions).
    pub gt: Option<PathBuf>,
    /// Background exponents tried in the CAM evaluation.
    pub bg_powers: Vec<f64>,
    pub unlabelled: UnlabelledPolicy,
    /// Output directory: `cams/`, `masks/` (and `train/`, `predictions/`) are made inside.
    pub out: PathBuf,
    /// Recompute outputs that exist (by default they are skipped).
    pub overwrite: bool,
    /// The CAM stage's JSON report file.
    pub report: Option<PathBuf>,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// Also write overlay pictures of the masks into `<out>/overlays` (and of the predictions
    /// into `<out>/prediction-overlays`).
    pub overlays: bool,
    /// Stage three, if wanted.
    pub stage3: Option<Stage3Config>,
}

impl PipelineConfig {
    /// The defaults of `clip-es run`: the reference's CAM, mask and evaluation settings, no
    /// ground truth, no stage three.
    pub fn new(data: DatasetConfig, classes: ClassSet, out: PathBuf) -> Self {
        let eval = EvalConfig::new(
            Prediction::Masks(PathBuf::new()),
            PathBuf::new(),
            PathBuf::new(),
            classes.clone(),
        );
        PipelineConfig {
            data,
            classes,
            model: clip_es_model::DEFAULT_MODEL.into(),
            settings: CamSettings::default(),
            exif: ExifOrientation::Ignore,
            mask: MaskOptions::default(),
            palette: false,
            save_confidence: None,
            gt: None,
            bg_powers: eval.bg_powers,
            unlabelled: eval.unlabelled,
            out,
            overwrite: false,
            report: None,
            threads: None,
            overlays: false,
            stage3: None,
        }
    }

    /// The split file of the run: the split, else the label file.
    fn split(&self) -> Result<PathBuf, PipelineError> {
        self.data.id_file().map(PathBuf::from).ok_or_else(|| {
            PipelineError::Config(
                "give --split and/or --labels to say which images to process".into(),
            )
        })
    }

    /// Every stage's configuration, wired together: the masks read `<out>/cams`, stage three
    /// trains on `<out>/masks`, the shared settings given to each.
    pub fn stages(&self) -> Result<Stages, PipelineError> {
        let split = self.split()?;
        let cams_dir = self.out.join("cams");
        let masks_dir = self.out.join("masks");
        let classes = &self.classes;
        let cams = CamsConfig {
            data: self.data.clone(),
            classes: classes.clone(),
            model: self.model.clone(),
            settings: self.settings.clone(),
            out: cams_dir.clone(),
            shard: None,
            overwrite: self.overwrite,
            report: self.report.clone(),
            threads: self.threads,
            exif: self.exif,
        };
        let mut masks = MasksConfig::new(
            cams_dir.clone(),
            self.data.images.clone(),
            split.clone(),
            masks_dir.clone(),
        );
        masks.options = self.mask.clone();
        masks.options.num_classes = Some(classes.len());
        masks.palette = self.palette;
        masks.save_confidence = self.save_confidence.clone();
        masks.overwrite = self.overwrite;
        masks.exif = self.exif;
        masks.threads = self.threads;
        masks.memory_limit = self.settings.memory_limit;
        if self.overlays {
            masks.overlays = Some((self.out.join("overlays"), classes.clone()));
        }
        let eval = |prediction: Prediction, split: PathBuf| {
            self.gt.as_ref().map(|gt| EvalConfig {
                bg_powers: self.bg_powers.clone(),
                cam_kind: self.mask.cam_kind,
                unlabelled: self.unlabelled,
                threads: self.threads,
                ..EvalConfig::new(prediction, gt.clone(), split, classes.clone())
            })
        };
        let evals = [
            Prediction::Cams(cams_dir),
            Prediction::Masks(masks_dir.clone()),
        ]
        .into_iter()
        .filter_map(|p| eval(p, split.clone()))
        .collect();

        let stage3 = self.stage3.as_ref().map(|t| {
            let train_dir = self.out.join("train");
            let predictions = self.out.join("predictions");
            let mut tc = TrainConfig::new(
                t.arch,
                self.data.images.clone(),
                masks_dir.clone(),
                train_dir.join("split.txt"),
                train_dir.clone(),
            );
            tc.num_classes = classes.len() + 1;
            // A rerun continues the training in <out>/train if it was made with these settings.
            tc.start = Start::Rerun {
                init: t.init.clone(),
            };
            tc.overwrite = self.overwrite;
            if let Some(i) = t.iters {
                tc.options.iters = i;
            }
            if let Some(lr) = t.lr {
                tc.options.lr = lr;
            }
            tc.options.batch = t.batch;
            tc.options.save_every = t.save_every;
            tc.clip_model = self.model.clone();
            tc.feature_budget = clip_es_train::features::FeatureBudget {
                max_side: self.settings.max_side,
                memory_limit: self.settings.memory_limit,
            };
            tc.device = t.device.clone();
            tc.threads = self.threads;
            let predict_split = t.predict_split.clone().unwrap_or_else(|| split.clone());
            let mut pc = PredictConfig::new(
                tc.out.join("final.safetensors"),
                self.data.images.clone(),
                predict_split.clone(),
                predictions.clone(),
            );
            pc.crf = t.predict_crf.then(CrfParams::default);
            pc.max_side = self.settings.max_side;
            pc.memory_limit = self.settings.memory_limit;
            pc.device = t.device.clone();
            pc.threads = self.threads;
            pc.exif = self.exif;
            pc.overwrite = self.overwrite;
            if self.overlays {
                pc.overlays = Some((self.out.join("prediction-overlays"), classes.clone()));
            }
            let eval = eval(Prediction::Masks(predictions), predict_split);
            Stage3 {
                train: tc,
                predict: pc,
                eval,
            }
        });
        Ok(Stages {
            split,
            cams,
            masks,
            evals,
            stage3,
        })
    }

    /// Checks the settings of every stage before any model loads or any file is written.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let config = |e: String| PipelineError::Config(e);
        if let Some(t) = self.threads {
            check_threads(t).map_err(config)?;
        }
        if self.bg_powers.is_empty() {
            return Err(config("--bg-power needs at least one value".into()));
        }
        if !self.bg_powers.iter().all(|t| t.is_finite()) {
            return Err(config("--bg-power values must be finite".into()));
        }
        if let Some(t) = self.settings.box_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(config("--box-threshold must be in [0, 1]".into()));
            }
        }
        if !self.settings.templates.iter().all(|t| t.contains("{}")) {
            return Err(config("every --template must contain {}".into()));
        }
        check_scales(&self.settings.augment.scales).map_err(config)?;
        self.mask.validate().map_err(config)?;
        // Brings the GPU up once: a missing driver is a bad option, found before any work.
        crate::cams::open_device(self.settings.device).map_err(|e| config(e.to_string()))?;
        let stages = self.stages()?;
        if let Some(s) = &stages.stage3 {
            s.train.validate().map_err(|e| {
                config(format!(
                    "the training stage (--train-* options, the rest as `clip-es train`): {e}"
                ))
            })?;
            s.predict
                .validate()
                .map_err(|e| config(format!("the prediction stage: {e}")))?;
        }
        Ok(())
    }
}

/// The test-time augmentation scales, by the rule of `--scales`
/// ([`crate::gradcam::Augment::parse_scales`]: positive, at most 8, distinct), for a front end that
/// gives them as numbers.
pub fn check_scales(scales: &[f64]) -> Result<(), String> {
    let text: Vec<String> = scales.iter().map(f64::to_string).collect();
    crate::gradcam::Augment::parse_scales(&text.join(","))
        .map(|_| ())
        .map_err(|e| format!("--scales: {e}"))
}

/// Stage three's configurations inside the pipeline.
#[derive(Clone, Debug)]
pub struct Stage3 {
    pub train: TrainConfig,
    pub predict: PredictConfig,
    /// The evaluation of the predictions (with ground truth).
    pub eval: Option<EvalConfig>,
}

/// Every stage's configuration, as [`run`] runs them.
#[derive(Clone, Debug)]
pub struct Stages {
    /// The ids of the run.
    pub split: PathBuf,
    pub cams: CamsConfig,
    pub masks: MasksConfig,
    /// The evaluations of the CAMs and of the masks (with ground truth).
    pub evals: Vec<EvalConfig>,
    pub stage3: Option<Stage3>,
}

/// Why the pipeline stopped (a failing image is reported in its stage's report instead, and
/// the next stages go on with the rest).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A setting is wrong, or outputs of an earlier run with other settings are in the way;
    /// nothing was computed.
    #[error("{0}")]
    Config(String),
    /// A stage could not run at all.
    #[error("the {stage} stage could not run: {message}")]
    Stage { stage: String, message: String },
    /// The caller asked the run to stop ([`run_until`]): where it stopped.
    #[error("{0}")]
    Stopped(String),
}

/// One evaluation's name ("evaluation of the masks") and report.
#[derive(Clone, Debug)]
pub struct NamedEval {
    pub what: String,
    pub report: EvalReport,
}

/// What [`run`] did, stage by stage.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    pub cams: CamsReport,
    pub masks: MasksReport,
    /// The evaluations, in the order run (CAMs, masks, predictions).
    pub evals: Vec<NamedEval>,
    pub train: Option<TrainReport>,
    pub predict: Option<PredictReport>,
}

impl PipelineReport {
    /// Whether any stage had images that failed.
    pub fn any_failed(&self) -> bool {
        !self.cams.failures.is_empty()
            || !self.masks.failures.is_empty()
            || self.evals.iter().any(|e| !e.report.failures.is_empty())
            || self
                .predict
                .as_ref()
                .is_some_and(|p| !p.failures.is_empty())
    }
}

/// The pipeline: validates every stage's settings, refuses outputs that an earlier run made
/// with other settings (every stage's at once, before any work), then runs the stages in
/// order, each announced through `progress.message` ("== CAMs"). A stage with failed images
/// lets the next stages run on the rest; one that cannot run at all stops the pipeline.
pub fn run(
    config: &PipelineConfig,
    progress: &dyn Progress,
) -> Result<PipelineReport, PipelineError> {
    run_until(config, progress, &|| false)
}

/// [`run`] that asks `stop` before each stage and between training iterations: once it
/// answers true, the run ends with [`PipelineError::Stopped`] (what the finished stages wrote,
/// and the training's checkpoints, stay).
pub fn run_until(
    config: &PipelineConfig,
    progress: &dyn Progress,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<PipelineReport, PipelineError> {
    config.validate()?;
    let stages = config.stages()?;
    check_earlier_outputs(config, &stages)?;
    let stage_error = |stage: &str| {
        let stage = stage.to_string();
        move |e: &dyn std::fmt::Display| PipelineError::Stage {
            stage: stage.clone(),
            message: e.to_string(),
        }
    };
    let stopped = |stage: &str| {
        if stop() {
            Err(PipelineError::Stopped(format!(
                "stopped before the {stage} stage"
            )))
        } else {
            Ok(())
        }
    };
    let mut report = PipelineReport::default();
    progress.message("== CAMs");
    report.cams = crate::cams::run(&stages.cams, progress).map_err(|e| stage_error("CAMs")(&e))?;
    stopped("pseudo masks")?;
    progress.message("== pseudo masks");
    report.masks =
        crate::masks::run(&stages.masks, progress).map_err(|e| stage_error("pseudo masks")(&e))?;
    for e in &stages.evals {
        let what = match e.prediction {
            Prediction::Cams(_) => "evaluation of the CAMs",
            _ => "evaluation of the masks",
        };
        stopped(what)?;
        progress.message(&format!("== {what}"));
        let r = crate::eval::run(e, progress).map_err(|err| stage_error(what)(&err))?;
        report.evals.push(NamedEval {
            what: what.into(),
            report: r,
        });
    }
    if let Some(Stage3 {
        train,
        mut predict,
        eval,
    }) = stages.stage3
    {
        stopped("training")?;
        write_train_split(&stages.split, &train, progress)?;
        progress.message(&format!("== training ({})", train.arch.name()));
        let trained = clip_es_train::train::run_until(&train, progress, stop).map_err(|e| {
            if stop() {
                PipelineError::Stopped(format!(
                    "stopped during the training ({e}); its checkpoints stay"
                ))
            } else {
                stage_error("training")(&e)
            }
        })?;
        // New weights make earlier predictions stale.
        predict.overwrite = config.overwrite || trained.iters > trained.start;
        report.train = Some(trained);
        stopped("predictions")?;
        progress.message("== predictions");
        report.predict = Some(
            crate::predict::run(&predict, progress).map_err(|e| stage_error("predictions")(&e))?,
        );
        if let Some(e) = eval {
            let what = "evaluation of the predictions";
            stopped(what)?;
            progress.message(&format!("== {what}"));
            let r = crate::eval::run(&e, progress).map_err(|err| stage_error(what)(&err))?;
            report.evals.push(NamedEval {
                what: what.into(),
                report: r,
            });
        }
    }
    Ok(report)
}

/// Outputs that an earlier run made with other settings, found before any work, every stage's
/// at once (each stage checks its own again when it starts).
fn check_earlier_outputs(config: &PipelineConfig, stages: &Stages) -> Result<(), PipelineError> {
    if config.overwrite {
        return Ok(());
    }
    use clip_es_data::manifest::holds_files;
    let mut mismatches = Vec::new();
    let cams = &stages.cams;
    let cams_check = crate::cams::manifest(cams).and_then(|m| {
        let has = holds_files(&cams.out, &["npz", "npy"]);
        m.check(&cams.out, false, has, &[])
    });
    let masks = &stages.masks;
    let masks_check = crate::masks::manifest(masks).check(
        &masks.out,
        false,
        holds_files(&masks.out, &["png"]),
        &[],
    );
    mismatches.extend(cams_check.err());
    mismatches.extend(masks_check.err());
    if let Some(s) = &stages.stage3 {
        mismatches.extend(
            clip_es_train::train::check_rerun(&s.train)
                .err()
                .map(|e| e.to_string()),
        );
        // The checkpoint may still change (more iterations): new weights make new
        // predictions, so only the other settings are compared here.
        let pc = &s.predict;
        if pc.checkpoint.is_file() {
            let has = holds_files(&pc.out, &["png"]);
            let predict_check = crate::predict::manifest(pc)
                .and_then(|m| m.check(&pc.out, false, has, &["checkpoint"]));
            mismatches.extend(predict_check.err());
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(PipelineError::Config(mismatches.join("; ")))
    }
}

/// Stage three trains only on the images whose pseudo masks exist (a failed image has none):
/// their ids go into the training stage's split file.
fn write_train_split(
    split: &std::path::Path,
    train: &TrainConfig,
    progress: &dyn Progress,
) -> Result<(), PipelineError> {
    let stage = PipelineError::Config;
    let ids = crate::datasets::read_split(split).map_err(|e| stage(e.to_string()))?;
    let with_mask: Vec<&String> = ids
        .iter()
        .filter(|id| train.masks.join(format!("{id}.png")).is_file())
        .collect();
    if with_mask.is_empty() {
        return Err(stage(format!(
            "no pseudo masks to train on in {}",
            train.masks.display()
        )));
    }
    if with_mask.len() < ids.len() {
        progress.message(&format!(
            "training on the {} of {} images that have a pseudo mask",
            with_mask.len(),
            ids.len()
        ));
    }
    std::fs::create_dir_all(&train.out)
        .map_err(|e| stage(format!("{}: {e}", train.out.display())))?;
    let text: String = with_mask.iter().map(|id| format!("{id}\n")).collect();
    crate::atomic::write_bytes_atomic(&train.split, text.as_bytes())
        .map_err(|e| stage(format!("{}: {e}", train.split.display())))
}
