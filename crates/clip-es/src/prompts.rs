//! The prompt-selection stage (paper section 3.2; docs/segment.md "Choosing a prompt
//! template"): ranks candidate prompt templates by the sharpness of [`crate::prompt_select`]
//! over a dataset's multi-label images. [`run`] is the entry point the command line
//! (`clip-es prompts`) and the Python module call.

use crate::cams::DatasetConfig;
use crate::classes::ClassSet;
use crate::datasets;
use crate::gradcam::TextClassifier;
use crate::progress::{check_threads, thread_pool, Progress};
use crate::prompt_select::{
    embed_image, image_sharpness, label_scores, mean_sharpness, InputLimits,
};
use clip_es_image::DecodedImage;
use clip_es_model::Clip;
use std::path::{Path, PathBuf};

/// Why the prompt stage could not run (a failing image is reported in [`PromptsReport`]
/// instead).
#[derive(Debug, thiserror::Error)]
pub enum PromptsError {
    /// A setting or an input file is wrong; nothing was computed.
    #[error("{0}")]
    Config(String),
    /// The model could not be loaded.
    #[error(transparent)]
    Clip(#[from] clip_es_model::ClipError),
    /// The text classifier of a template could not be built.
    #[error(transparent)]
    Model(#[from] clip_es_model::ModelError),
    /// No image had two or more labels (or all of those failed).
    #[error("{0}")]
    NoImages(String),
    /// The caller asked the run to stop ([`run_until`]).
    #[error("stopped")]
    Stopped,
    /// The JSON ranking could not be written.
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The prompt stage's settings.
#[derive(Clone, Debug)]
pub struct PromptsConfig {
    /// Which images and labels (as the CAM stage reads them; `split` or `labels` names the ids).
    pub data: DatasetConfig,
    /// The classes: `voc`, `coco` or a class file (as `--dataset`).
    pub dataset: String,
    /// Candidate templates, `{}` standing for the class name ([`read_templates`] reads a file of
    /// them).
    pub templates: Vec<String>,
    /// A Hugging Face id, a local directory or file, or an OpenAI name.
    pub model: String,
    /// Keep the resized positional embedding in float32 (the reference rounds it to float16).
    pub exact_pos_embed: bool,
    /// Also write the ranking as JSON ([`PromptsReport::to_json`]) to this file.
    pub json: Option<PathBuf>,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// How large the ViT input may be (`--max-side`, `--memory-limit`): the input-size rule
    /// of every stage, [`clip_es_model::vit_input_size`].
    pub limits: InputLimits,
}

impl PromptsConfig {
    /// The defaults of `clip-es prompts`: VOC classes, the default model, float16 positional
    /// embedding as the reference, no JSON file, all cores.
    pub fn new(data: DatasetConfig, templates: Vec<String>) -> Self {
        PromptsConfig {
            data,
            dataset: "voc".into(),
            templates,
            model: clip_es_model::DEFAULT_MODEL.into(),
            exact_pos_embed: false,
            json: None,
            threads: None,
            limits: InputLimits::default(),
        }
    }

    /// Checks the settings before any file is read or any model loaded: at least one template,
    /// each with `{}` and listed once, a thread count in range, and a file naming the ids.
    pub fn validate(&self) -> Result<(), PromptsError> {
        if let Some(t) = self.threads {
            check_threads(t).map_err(PromptsError::Config)?;
        }
        self.limits.validate().map_err(PromptsError::Config)?;
        if self.templates.is_empty() {
            return Err(PromptsError::Config("no templates".into()));
        }
        for (i, t) in self.templates.iter().enumerate() {
            if !t.contains("{}") {
                return Err(PromptsError::Config(format!(
                    "template {t:?} has no {{}} for the class name"
                )));
            }
            if self.templates[..i].contains(t) {
                return Err(PromptsError::Config(format!("template {t:?} listed twice")));
            }
        }
        if self.data.id_file().is_none() {
            return Err(PromptsError::Config(
                "give --split (and/or --labels) to say which images to process".into(),
            ));
        }
        Ok(())
    }
}

/// A template file: one per line, `{}` standing for the class name; blank lines and lines
/// starting with `#` are skipped. Errors name the file and line.
pub fn read_templates(path: &Path) -> Result<Vec<String>, PromptsError> {
    let text = crate::classes::read_text_file(path)
        .map_err(|e| PromptsError::Config(format!("reading {}: {e}", path.display())))?;
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        if !t.contains("{}") {
            return Err(PromptsError::Config(format!(
                "{}: template {t:?} has no {{}} for the class name",
                at()
            )));
        }
        if out.iter().any(|o| o == t) {
            return Err(PromptsError::Config(format!(
                "{}: template {t:?} listed twice",
                at()
            )));
        }
        out.push(t.to_string());
    }
    if out.is_empty() {
        return Err(PromptsError::Config(format!(
            "{}: no templates",
            path.display()
        )));
    }
    Ok(out)
}

/// One template's place in the ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedTemplate {
    pub template: String,
    /// Mean sharpness over the multi-label images (lower is better).
    pub sharpness: f64,
}

/// What [`run`] found.
#[derive(Clone, Debug)]
pub struct PromptsReport {
    /// The weights file of the model.
    pub model: String,
    /// The class set as given (`PromptsConfig::dataset`).
    pub dataset: String,
    /// Images with two or more labels (the ones the sharpness uses).
    pub images_used: usize,
    pub single_label_images: usize,
    /// Images that could not be read, with the reason.
    pub failures: Vec<(String, String)>,
    /// The templates, best (lowest sharpness) first; ties keep the given order.
    pub ranking: Vec<RankedTemplate>,
}

impl PromptsReport {
    /// The JSON of `clip-es prompts --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "dataset": self.dataset,
            "images_used": self.images_used,
            "single_label_images": self.single_label_images,
            "failed_images": self.failures.len(),
            "templates": self.ranking.iter().enumerate().map(|(rank, t)| serde_json::json!({
                "rank": rank + 1,
                "template": t.template,
                "sharpness": t.sharpness,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The prompt stage: validates `config`, reads the classes and the ids, loads the model, then
/// scores every template on every image with two or more labels (one failing image is
/// reported and skipped) and ranks them; writes the JSON ranking when asked.
pub fn run(config: &PromptsConfig, progress: &dyn Progress) -> Result<PromptsReport, PromptsError> {
    run_until(config, progress, &|| false)
}

/// [`run`] that asks `stop` before each image: once it answers true, the run ends with
/// [`PromptsError::Stopped`].
pub fn run_until(
    config: &PromptsConfig,
    progress: &dyn Progress,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<PromptsReport, PromptsError> {
    config.validate()?;
    let classes =
        ClassSet::from_spec(&config.dataset).map_err(|e| PromptsError::Config(e.to_string()))?;
    let data = &config.data;
    let (ids, source, note) = datasets::plan(
        data.split.as_deref(),
        data.labels.as_deref(),
        data.annotations.as_deref(),
    )
    .map_err(|e| PromptsError::Config(e.to_string()))?;
    if let Some(note) = note {
        progress.message(&format!("note: {note}"));
    }
    if let Some(path) = &config.json {
        // Found now rather than after every image was scored.
        crate::atomic::probe_file_dir(path).map_err(PromptsError::Config)?;
    }
    let pool = thread_pool(config.threads).map_err(PromptsError::Config)?;
    pool.install(|| score_templates(config, &classes, &ids, &source, progress, stop))
}

fn score_templates(
    config: &PromptsConfig,
    classes: &ClassSet,
    ids: &[String],
    source: &datasets::LabelSource,
    progress: &dyn Progress,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<PromptsReport, PromptsError> {
    let templates = &config.templates;
    let clip = Clip::load(&config.model)?;
    let classifiers = templates
        .iter()
        .map(|t| TextClassifier::build(&clip, &classes.prompt_names, &[], std::slice::from_ref(t)))
        .collect::<Result<Vec<_>, _>>()?;
    let patch = clip.config().vision.patch_size;

    progress.start("prompts", ids.len());
    let mut per_template: Vec<Vec<f64>> = vec![Vec::new(); templates.len()];
    let mut single_label = 0usize;
    let mut failures: Vec<(String, String)> = Vec::new();
    for id in ids {
        if stop() {
            return Err(PromptsError::Stopped);
        }
        let r = (|| -> Result<bool, String> {
            let sample = source.sample(id, &config.data.images, classes)?;
            if sample.labels.len() < 2 {
                return Ok(false);
            }
            let image = DecodedImage::open(&sample.image).map_err(|e| e.to_string())?;
            let (w, h) = (image.width() as usize, image.height() as usize);
            if w < patch || h < patch {
                return Err(format!(
                    "{}: the image is {w}x{h}, smaller than the model's {patch}-pixel patch",
                    sample.image.display()
                ));
            }
            let z = embed_image(
                clip.vision(),
                &image,
                &config.limits,
                !config.exact_pos_embed,
            )
            .map_err(|e| format!("{}: {e}", sample.image.display()))?;
            for (k, c) in classifiers.iter().enumerate() {
                per_template[k].push(image_sharpness(&label_scores(&z, c, &sample.labels)));
            }
            Ok(true)
        })();
        match r {
            Ok(true) => {}
            Ok(false) => single_label += 1,
            Err(e) => {
                progress.message(&format!("skipping {id}: {e}"));
                failures.push((id.clone(), e));
            }
        }
        progress.advance();
    }
    progress.finish();
    let used = per_template[0].len();
    if used == 0 {
        return Err(PromptsError::NoImages(format!(
            "no image with two or more labels ({single_label} single-label images, {} failed): sharpness needs multi-label images",
            failures.len()
        )));
    }
    let mut ranked: Vec<(usize, f64)> = per_template
        .iter()
        .map(|v| mean_sharpness(v))
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let report = PromptsReport {
        model: clip.files().weights.display().to_string(),
        dataset: config.dataset.clone(),
        images_used: used,
        single_label_images: single_label,
        failures,
        ranking: ranked
            .into_iter()
            .map(|(k, sharpness)| RankedTemplate {
                template: templates[k].clone(),
                sharpness,
            })
            .collect(),
    };
    if let Some(path) = &config.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("JSON of numbers");
        crate::atomic::write_bytes_atomic(path, text.as_bytes()).map_err(|error| {
            PromptsError::Write {
                path: path.clone(),
                error,
            }
        })?;
    }
    Ok(report)
}
