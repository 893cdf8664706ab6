//! The segment stage as one call ([`run`]): the classes (typed names, a preset's, or
//! label-free tagging), the photos, the output checks, then every photo through
//! [`Segmenter`] and [`write_outputs`] (or its tags alone). The command line (`clip-es
//! segment`) and the Python module call it; they only map options to a [`SegmentConfig`] and
//! show the [`SegmentReport`].

use super::{
    check_outputs, collect_images, default_vocabulary, parse_classes, preset_classes, tags_json,
    write_outputs, OutputFiles, SegmentClass, SegmentOptions, Segmenter, Selection,
};
use crate::cams::{CamSettings, CamsError};
use crate::classes::ClassSet;
use crate::progress::{check_threads, thread_pool, Progress};
use std::path::PathBuf;

/// The output folder `segment` writes into when none is given.
pub const DEFAULT_OUT: &str = "segments";

/// The segment stage's settings.
#[derive(Clone, Debug)]
pub struct SegmentConfig {
    /// Photos, or directories whose photos are all segmented (not recursive).
    pub inputs: Vec<PathBuf>,
    /// Classes to segment, separated by `,`, synonyms of one class by `;`; with `dataset`,
    /// names of its classes. `None`: each photo is tagged first (label-free).
    pub classes: Option<String>,
    /// A preset (`voc`, `coco`) or class file whose names, prompts, synonyms, background words
    /// and label values are used.
    pub dataset: Option<String>,
    /// Background words: `voc`, `coco`, `none` or a file (default: the dataset's, else coco's).
    pub background: Option<String>,
    /// Label-free mode: the class file to tag from (default: the VOC classes and the rest of
    /// COCO's, or `dataset`'s classes). Not with `classes` or `dataset`.
    pub vocabulary: Option<PathBuf>,
    /// Only tag the photos, writing `<out>/tags.json`. Not with `classes`.
    pub tags_only: bool,
    /// The mask settings (confidence, CRF) and the tagging settings (threshold, most tags).
    pub options: SegmentOptions,
    /// The CAM settings: templates, test-time augmentation, `max_side`, `memory_limit`.
    pub settings: CamSettings,
    /// Output directory.
    pub out: PathBuf,
    /// A Hugging Face id, a local directory or file, or an OpenAI name.
    pub model: String,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
}

impl SegmentConfig {
    /// The defaults of `clip-es segment` for these inputs: label-free, the reference's mask and
    /// CAM settings, output into [`DEFAULT_OUT`].
    pub fn new(inputs: Vec<PathBuf>) -> Self {
        SegmentConfig {
            inputs,
            classes: None,
            dataset: None,
            background: None,
            vocabulary: None,
            tags_only: false,
            options: SegmentOptions::default(),
            settings: CamSettings::default(),
            out: PathBuf::from(DEFAULT_OUT),
            model: clip_es_model::DEFAULT_MODEL.into(),
            threads: None,
        }
    }

    /// Checks the settings before any photo is read or any model loaded: the thread count,
    /// the templates, the mask and tag ranges, the options that exclude each other and the
    /// device.
    pub fn validate(&self) -> Result<(), SegmentRunError> {
        let bad = |m: String| Err(SegmentRunError::Config(m));
        if let Some(t) = self.threads {
            check_threads(t).map_err(SegmentRunError::Config)?;
        }
        if self.inputs.is_empty() {
            return bad("no photos given".into());
        }
        if self.settings.templates.is_empty() {
            return bad("no --template given".into());
        }
        if !self.settings.templates.iter().all(|t| t.contains("{}")) {
            return bad("every --template must contain {}".into());
        }
        if self.vocabulary.is_some() && (self.classes.is_some() || self.dataset.is_some()) {
            return bad("--vocabulary cannot be used with --classes or --dataset".into());
        }
        if self.tags_only && self.classes.is_some() {
            return bad("--tags-only cannot be used with --classes".into());
        }
        crate::pipeline::check_scales(&self.settings.augment.scales)
            .map_err(SegmentRunError::Config)?;
        self.options.validate().map_err(SegmentRunError::Config)?;
        // Brings the GPU up once: a missing driver is a bad option, found before any work.
        crate::cams::open_device(self.settings.device)
            .map(drop)
            .map_err(|e| SegmentRunError::Config(e.to_string()))
    }
}

/// Why the segment stage could not run (a photo that fails is reported in [`SegmentReport`]
/// instead).
#[derive(Debug, thiserror::Error)]
pub enum SegmentRunError {
    /// A setting, a class list, a photo path or the output folder is wrong; nothing was
    /// computed.
    #[error("{0}")]
    Config(String),
    /// The model could not be loaded.
    #[error(transparent)]
    Clip(#[from] clip_es_model::ClipError),
    /// The text classifier of the classes could not be built.
    #[error(transparent)]
    Cams(#[from] CamsError),
    /// The caller asked the run to stop ([`run_until`]).
    #[error("stopped")]
    Stopped,
    /// `tags.json` could not be written.
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What one photo gave.
#[derive(Clone, Debug)]
pub enum PhotoResult {
    /// Its files, and its JSON summary (classes, pixel fractions, tags).
    Segmented {
        path: PathBuf,
        files: OutputFiles,
        summary: serde_json::Value,
    },
    /// Its tags (`tags_only`): class names with their scores, best first.
    Tagged {
        path: PathBuf,
        tags: Vec<(String, f32)>,
    },
}

/// What [`run`] did.
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The weights file of the model.
    pub model: String,
    /// The photos found.
    pub images: usize,
    /// What the run segments: the fixed classes, or how many candidates tagging chooses from.
    pub selection: String,
    /// The photos done, in the order found.
    pub results: Vec<PhotoResult>,
    /// Photos that failed (path, reason); the others were done.
    pub failures: Vec<(String, String)>,
    /// `<out>/tags.json` when only tagging.
    pub tags_file: Option<PathBuf>,
}

/// The segment stage: validates `config`, resolves the classes, finds the photos, checks every
/// output it may write against the others and the inputs and probes the output folder (all
/// before the model loads), then segments (or tags) each photo; one photo that fails is
/// reported and the others go on.
pub fn run(
    config: &SegmentConfig,
    progress: &dyn Progress,
) -> Result<SegmentReport, SegmentRunError> {
    run_until(config, progress, &|| false)
}

/// [`run`] that asks `stop` before each photo: once it answers true, the run ends with
/// [`SegmentRunError::Stopped`] (the photos done so far keep their files).
pub fn run_until(
    config: &SegmentConfig,
    progress: &dyn Progress,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<SegmentReport, SegmentRunError> {
    config.validate()?;
    let pool = thread_pool(config.threads).map_err(SegmentRunError::Config)?;
    pool.install(|| run_in_pool(config, progress, stop))
}

fn run_in_pool(
    config: &SegmentConfig,
    progress: &dyn Progress,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<SegmentReport, SegmentRunError> {
    let cfg = |e: &dyn std::fmt::Display| SegmentRunError::Config(e.to_string());
    let images = collect_images(&config.inputs).map_err(|e| cfg(&e))?;

    // Candidates, selection, background words, box threshold.
    let (candidates, selection, mut background, box_threshold) = match &config.dataset {
        Some(spec) => {
            let set = ClassSet::from_spec(spec).map_err(|e| cfg(&e))?;
            let all = preset_classes(&set).map_err(|e| cfg(&format!("{spec}: {e}")))?;
            let selection = match &config.classes {
                Some(text) => {
                    let chosen = parse_classes(text, Some(&all)).map_err(|e| cfg(&e))?;
                    Selection::Fixed(chosen.iter().map(|c| (c.id - 1) as usize).collect())
                }
                None => Selection::Tags,
            };
            (all, selection, set.background, set.box_threshold)
        }
        None => match &config.classes {
            Some(text) => {
                let chosen = parse_classes(text, None).map_err(|e| cfg(&e))?;
                let n = chosen.len();
                let bg = ClassSet::coco().background;
                (chosen, Selection::Fixed((0..n).collect()), bg, 0.4)
            }
            None => {
                let set = match &config.vocabulary {
                    Some(p) => ClassSet::from_file(p).map_err(|e| cfg(&e))?,
                    None => default_vocabulary(),
                };
                let all = preset_classes(&set).map_err(|e| cfg(&format!("vocabulary: {e}")))?;
                (all, Selection::Tags, set.background, set.box_threshold)
            }
        },
    };
    if let Some(bg) = &config.background {
        background = ClassSet::background_from_spec(bg).map_err(|e| cfg(&e))?;
    }
    // Every output this run may write, checked against the others and the inputs, and the
    // output folder probed, before the model loads.
    let possible: Vec<&SegmentClass> = match &selection {
        Selection::Fixed(c) => c.iter().map(|&i| &candidates[i]).collect(),
        Selection::Tags => candidates.iter().collect(),
    };
    check_outputs(
        &config.inputs,
        &images,
        &config.out,
        &possible,
        config.tags_only,
    )
    .map_err(|e| cfg(&e))?;

    let clip = clip_es_model::Clip::load(&config.model)?;
    let model = clip.files().weights.display().to_string();
    let seg = Segmenter::new(
        clip,
        candidates,
        background,
        box_threshold,
        &config.settings,
        selection,
        config.options.clone(),
    )?;
    let selection = match &seg.selection {
        Selection::Fixed(c) => format!(
            "classes: {}",
            c.iter()
                .map(|&i| seg.candidates[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Selection::Tags => format!("label-free: tagging from {} classes", seg.candidates.len()),
    };
    progress.message(&format!(
        "model {model}; {} images; {selection}",
        images.len()
    ));

    if images.len() > 1 {
        progress.start("segment", images.len());
    }
    let mut results = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut all_tags = Vec::new();
    for (path, stem) in &images {
        if stop() {
            return Err(SegmentRunError::Stopped);
        }
        let result = if config.tags_only {
            Segmenter::upright(path)
                .and_then(|(o, d)| seg.tag(&d, path).map(|t| (o, t)))
                .map(|(orientation, tags)| {
                    all_tags.push(serde_json::json!({
                        "image": path.display().to_string(),
                        "exif_orientation": orientation,
                        "tags": tags_json(&tags, &seg.candidates),
                    }));
                    PhotoResult::Tagged {
                        path: path.clone(),
                        tags: tags
                            .chosen
                            .iter()
                            .map(|&c| (seg.candidates[c].name.clone(), tags.scores[c].score))
                            .collect(),
                    }
                })
        } else {
            seg.segment(path)
                .and_then(|r| write_outputs(&seg, &r, &config.out, stem))
                .map(|(files, summary)| PhotoResult::Segmented {
                    path: path.clone(),
                    files,
                    summary,
                })
        };
        match result {
            Ok(r) => results.push(r),
            Err(e) => {
                // The error names the photo already; the reason is said without it.
                let text = e.to_string();
                progress.message(&format!("skipping: {text}"));
                let name = path.display().to_string();
                let reason = text
                    .strip_prefix(&format!("{name}: "))
                    .unwrap_or(&text)
                    .to_string();
                failures.push((name, reason));
            }
        }
        if images.len() > 1 {
            progress.advance();
        }
    }
    if images.len() > 1 {
        progress.finish();
    }
    let tags_file = if config.tags_only {
        let file = config.out.join("tags.json");
        let text = serde_json::to_string_pretty(&serde_json::json!({ "images": all_tags }))
            .expect("JSON of strings and numbers");
        crate::atomic::write_bytes_atomic(&file, text.as_bytes()).map_err(|error| {
            SegmentRunError::Write {
                path: file.clone(),
                error,
            }
        })?;
        Some(file)
    } else {
        None
    };
    Ok(SegmentReport {
        model,
        images: images.len(),
        selection,
        results,
        failures,
        tags_file,
    })
}
