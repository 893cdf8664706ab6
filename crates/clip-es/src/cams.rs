//! The CAM stage (docs/algorithm.md, "Pipeline"; reference `generate_cams_voc12.py`,
//! `generate_cams_coco14.py`): [`Cams`] computes the CAMs of one image in memory, [`run`] those
//! of a dataset: one `<id>.npz` per image, written atomically; finished images are skipped on
//! a rerun; a shard `I/N` splits the work between machines; a failing image is reported and
//! skipped.

use crate::budget;
use crate::cam_files::CamFile;
use crate::classes::ClassSet;
use crate::datasets::{self, Sample};
use crate::gradcam::{CamOptions, ImageCams, StageTimes, TextClassifier};
use crate::progress::ExifNotice;
use crate::progress::{thread_pool, Progress};
use clip_es_image::{DecodedImage, ExifOrientation};
use clip_es_model::Clip;
use half::f16;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why the CAMs of one image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CamsError {
    #[error(transparent)]
    Image(#[from] clip_es_image::ImageError),
    #[error(transparent)]
    Model(#[from] clip_es_model::ModelError),
    #[error(transparent)]
    Clip(#[from] clip_es_model::ClipError),
    #[error(transparent)]
    CamFile(#[from] crate::cam_files::CamIoError),
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
    #[error("{0}")]
    Invalid(String),
}

/// A loaded model with its text classifier: the CAMs of any image for any of its classes.
pub struct Cams {
    clip: Clip,
    classes: ClassSet,
    classifier: TextClassifier,
    options: CamOptions,
    augment: crate::gradcam::Augment,
    max_side: usize,
    memory_limit: Option<u64>,
    /// The image tower as burn modules on [`CamSettings::device`] (`None`: the CPU kernels).
    burn: Option<clip_es_gpu::VisionTower>,
    device: Option<clip_es_gpu::BurnDevice>,
}

/// The settings of the CAM method besides the classes.
#[derive(Clone, Debug, PartialEq)]
pub struct CamSettings {
    /// CAA box threshold (`None`: the class set's, 0.4 for VOC and class files, 0.7 for COCO).
    pub box_threshold: Option<f64>,
    /// Prompt templates, `{}` standing for the class name; several are averaged.
    pub templates: Vec<String>,
    /// Also keep the unrefined GradCAM maps (`highres`).
    pub save_unrefined: bool,
    /// Keep the resized positional embedding in float32 (the reference rounds it to float16).
    pub exact_pos_embed: bool,
    /// Test-time augmentation (default: the reference's single pass).
    pub augment: crate::gradcam::Augment,
    /// Images whose longer side exceeds this are downscaled for the ViT (0: never); their CAMs
    /// still come back at the original size. See [`crate::budget`].
    pub max_side: usize,
    /// Bytes one image's CAM computation may take (estimated before allocating); `None`: what
    /// the system has available when the image starts.
    pub memory_limit: Option<u64>,
    /// Where the GradCAM pass (image tower forward, attention maps, gradients) runs: `None`
    /// the CPU kernels, else a burn device (docs/gpu.md, "CAMs on the GPU"). CAA and the
    /// resize stay on the CPU. The maps agree within float32 rounding, so the device is not
    /// part of the stage's manifest.
    pub device: Option<clip_es_gpu::BurnDevice>,
}

/// The `--device` value of the CAMs: `cpu` (the hand-written CPU kernels, the default) or a
/// burn device (`flex`, `vulkan`).
pub fn parse_device(name: &str) -> Result<Option<clip_es_gpu::BurnDevice>, String> {
    match name {
        "cpu" => Ok(None),
        other => clip_es_gpu::BurnDevice::parse(other)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// Brings up the device of the GradCAM pass and says what it is: `cpu (clip-es kernels)`,
/// `flex (CPU)` or `vulkan (<adapter name>)`, the line a command prints first. A Vulkan device
/// is opened once per process ([`clip_es_gpu::BurnDevice::open`]); a machine without a
/// Vulkan driver gets the error naming `--device` and what to install.
pub fn open_device(device: Option<clip_es_gpu::BurnDevice>) -> Result<String, CamsError> {
    match device {
        None => Ok("cpu (clip-es kernels)".into()),
        Some(d) => d
            .open()
            .map(|(_, what)| what)
            .map_err(|e| CamsError::Invalid(e.to_string())),
    }
}

impl Default for CamSettings {
    fn default() -> Self {
        CamSettings {
            box_threshold: None,
            templates: vec![crate::gradcam::DEFAULT_TEMPLATE.to_string()],
            save_unrefined: false,
            exact_pos_embed: false,
            augment: crate::gradcam::Augment::default(),
            max_side: budget::DEFAULT_MAX_SIDE,
            memory_limit: None,
            device: None,
        }
    }
}

impl Cams {
    /// Builds the text classifier of `classes` (their prompt names and background words in
    /// every template) for a loaded model.
    pub fn new(clip: Clip, classes: ClassSet, settings: &CamSettings) -> Result<Self, CamsError> {
        let box_threshold = settings.box_threshold.unwrap_or(classes.box_threshold);
        if !(0.0..=1.0).contains(&box_threshold) {
            return Err(CamsError::Invalid(format!(
                "box threshold {box_threshold} is not in [0, 1]"
            )));
        }
        if settings.templates.is_empty() || !settings.templates.iter().all(|t| t.contains("{}")) {
            return Err(CamsError::Invalid(
                "give at least one template, each containing {}".into(),
            ));
        }
        let classifier = TextClassifier::build(
            &clip,
            &classes.prompt_names,
            &classes.background,
            &settings.templates,
        )?;
        let burn = settings
            .device
            .map(|device| burn_tower(&clip, device))
            .transpose()?;
        Ok(Cams {
            clip,
            classes,
            classifier,
            options: CamOptions {
                box_threshold,
                round_pos_embed_f16: !settings.exact_pos_embed,
                unrefined: settings.save_unrefined,
                ..CamOptions::default()
            },
            augment: settings.augment.clone(),
            max_side: settings.max_side,
            memory_limit: settings.memory_limit,
            burn,
            device: settings.device,
        })
    }

    /// The device the GradCAM pass runs on: `cpu` (the hand-written kernels), `flex` or
    /// `vulkan`.
    pub fn device_name(&self) -> &'static str {
        self.device.map_or("cpu", clip_es_gpu::BurnDevice::name)
    }

    /// Loads a model (a Hugging Face id, a local directory or file, or an OpenAI name) and
    /// builds the classifier.
    pub fn load(model: &str, classes: ClassSet, settings: &CamSettings) -> Result<Self, CamsError> {
        Self::new(Clip::load(model)?, classes, settings)
    }

    pub fn clip(&self) -> &Clip {
        &self.clip
    }

    /// The model back, to build the classifier of other classes or settings without loading
    /// it again.
    pub fn into_clip(self) -> Clip {
        self.clip
    }

    pub fn classes(&self) -> &ClassSet {
        &self.classes
    }

    /// The memory limit given in the settings (`None`: what the system reports available).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    pub fn options(&self) -> &CamOptions {
        &self.options
    }

    /// The longer side above which images are downscaled for the ViT (0: never).
    pub fn max_side(&self) -> usize {
        self.max_side
    }

    /// The ViT input (height, width) of a `width` x `height` image (the rule of every stage,
    /// [`clip_es_model::vit_input_size`]: downscaled to the maximum side, rounded up to whole
    /// patches), refused when the CAMs of `labels` labels at the largest view the augmentation
    /// asks for would need more than the memory limit ([`budget::CamShape`]).
    pub fn vit_input(
        &self,
        width: usize,
        height: usize,
        labels: usize,
    ) -> Result<(usize, usize), clip_es_model::InputSizeError> {
        let vision = &self.clip.config().vision;
        let patch = vision.patch_size;
        let threads = rayon::current_num_threads();
        let peak = |iw: usize, ih: usize| {
            let (vh, vw) = self.augment.largest_view((ih, iw), patch);
            budget::CamShape {
                height,
                width,
                input_height: vh,
                input_width: vw,
                patch,
                model_width: vision.width,
                heads: vision.heads,
                attention_blocks: self.options.attention_blocks.min(vision.layers),
                labels,
                unrefined: self.options.unrefined,
                threads,
            }
            .peak_bytes()
        };
        let limit = self.memory_limit.or_else(budget::available_bytes);
        let budget = limit.map(|limit| clip_es_model::MemoryBudget {
            limit,
            purpose: "CAMs",
            peak_bytes: &peak,
        });
        let (iw, ih) =
            clip_es_model::vit_input_size(width, height, patch, self.max_side, budget.as_ref())?;
        Ok((ih, iw))
    }

    /// The CAMs of one decoded image for `labels` (class indices, distinct): the image is
    /// resized to multiples of the patch size as the reference does (after a downscale to the
    /// maximum side, for large images), and the maps come back at its own size. An image whose
    /// estimated memory exceeds the limit fails before anything is allocated.
    /// `StageTimes::input` holds the resize seconds.
    pub fn image(
        &self,
        image: &DecodedImage,
        labels: &[usize],
    ) -> Result<(ImageCams, StageTimes), CamsError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let patch = self.clip.config().vision.patch_size;
        if w < patch || h < patch {
            return Err(CamsError::Invalid(format!(
                "the image is {w}x{h}, smaller than the model's {patch}-pixel patch"
            )));
        }
        if let Some(&l) = labels.iter().find(|&&l| l >= self.classes.len()) {
            return Err(CamsError::Invalid(format!(
                "label {l} is not one of the {} classes",
                self.classes.len()
            )));
        }
        if labels.is_empty() {
            return Err(CamsError::Invalid("no labels".into()));
        }
        let base = self
            .vit_input(w, h, labels.len())
            .map_err(|e| CamsError::Invalid(e.to_string()))?;
        crate::gradcam::cams_for_image(
            crate::gradcam::Tower {
                cpu: self.clip.vision(),
                burn: self.burn.as_ref(),
            },
            &self.classifier,
            image,
            base,
            labels,
            &self.options,
            &self.augment,
        )
        .map_err(|e| match e {
            crate::gradcam::CamError::Image(e) => CamsError::Image(e),
            crate::gradcam::CamError::Model(e) => CamsError::Model(e),
            other => CamsError::Invalid(other.to_string()),
        })
    }

    /// The test-time augmentation in use.
    pub fn augment(&self) -> &crate::gradcam::Augment {
        &self.augment
    }

    /// The text classifier (one row per class, then the background words).
    pub fn classifier(&self) -> &TextClassifier {
        &self.classifier
    }

    /// [`Cams::image`] for 8-bit RGB samples (row-major, 3 bytes per pixel).
    pub fn image_rgb(
        &self,
        width: u32,
        height: u32,
        rgb: Vec<u8>,
        labels: &[usize],
    ) -> Result<(ImageCams, StageTimes), CamsError> {
        let image = DecodedImage::from_raw(width, height, clip_es_image::PilMode::Rgb, rgb, None)?;
        self.image(&image, labels)
    }
}

/// The image tower of a loaded model as burn modules on `device`, read again from the model's
/// weights file (the CPU tower took its buffers over).
fn burn_tower(
    clip: &Clip,
    device: clip_es_gpu::BurnDevice,
) -> Result<clip_es_gpu::VisionTower, CamsError> {
    let on_device = |e: String| CamsError::Invalid(format!("--device {}: {e}", device.name()));
    let (burn_device, _) = device
        .open()
        .map_err(|e| CamsError::Invalid(e.to_string()))?;
    let path = &clip.files().weights;
    let weights = clip_es_model::ClipWeights::load(path).map_err(|e| on_device(e.to_string()))?;
    let c = clip.config();
    clip_es_gpu::VisionTower::new(
        &weights,
        &c.vision,
        c.embed_dim,
        c.layer_norm_eps,
        &burn_device,
    )
    .map_err(|e| on_device(format!("{}: {e}", path.display())))
}

impl ImageCams {
    /// The CAM file of these maps (float16, as the reference saves them).
    pub fn to_cam_file(&self, labels: &[usize]) -> CamFile {
        let to_f16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        CamFile {
            keys: labels.iter().map(|&l| l as i64).collect(),
            height: self.height,
            width: self.width,
            attn_highres: to_f16(&self.refined),
            highres: self.unrefined.as_deref().map(to_f16),
        }
    }
}

/// Which images and where their labels come from.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetConfig {
    /// Directory of the images (`<id>.jpg`, or another usual extension).
    pub images: PathBuf,
    /// VOC annotations directory: labels are the objects of `<id>.xml`.
    pub annotations: Option<PathBuf>,
    /// Label file with lines `id l1 l2 ...`; without `split`, its ids are the images.
    pub labels: Option<PathBuf>,
    /// Split file: one image id per line, optionally followed by its labels.
    pub split: Option<PathBuf>,
}

impl DatasetConfig {
    /// The file listing the ids: the split, else the label file.
    pub fn id_file(&self) -> Option<&Path> {
        self.split.as_deref().or(self.labels.as_deref())
    }
}

/// The CAM stage's settings.
#[derive(Clone, Debug)]
pub struct CamsConfig {
    pub data: DatasetConfig,
    pub classes: ClassSet,
    /// A Hugging Face id, a local directory or file (HF, OpenAI .pt), or ViT-B/16 etc.
    pub model: String,
    pub settings: CamSettings,
    /// Output directory for `<id>.npz`.
    pub out: PathBuf,
    /// Process only shard I of N (0-based): images whose position in the split is I mod N.
    pub shard: Option<(usize, usize)>,
    /// Recompute images whose output exists.
    pub overwrite: bool,
    /// Write a JSON report (per-image seconds by stage, failures) to this file.
    pub report: Option<PathBuf>,
    /// Threads (all cores when `None`).
    pub threads: Option<usize>,
    /// EXIF orientation tags: ignored (the stored pixel grid, the default) or applied (give the
    /// same to the mask stage).
    pub exif: ExifOrientation,
}

/// Seconds of one processed image.
#[derive(Clone, Debug)]
pub struct ImageTimes {
    pub id: String,
    /// Decoding and resizing to the CLIP input.
    pub decode: f64,
    pub stages: StageTimes,
    pub write: f64,
}

impl ImageTimes {
    pub fn total(&self) -> f64 {
        let s = &self.stages;
        self.decode + s.forward + s.backward + s.affinity + s.resize + self.write
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug, Default)]
pub struct CamsReport {
    /// Ids in the split, in this shard, and already done before the run.
    pub in_split: usize,
    pub in_shard: usize,
    pub already_done: usize,
    /// The images processed, with their seconds.
    pub written: Vec<ImageTimes>,
    /// Images that failed, with the reason.
    pub failures: Vec<(String, String)>,
    /// The weights file used (empty when nothing was to do).
    pub model: String,
    pub threads: usize,
}

impl CamsReport {
    /// Mean seconds per image by stage, as a line (None if no image was processed).
    pub fn timing_summary(&self) -> Option<String> {
        if self.written.is_empty() {
            return None;
        }
        let n = self.written.len() as f64;
        let sum = |f: &dyn Fn(&ImageTimes) -> f64| self.written.iter().map(f).sum::<f64>() / n;
        Some(format!(
            "seconds per image: {:.3} total = decode+resize {:.3}, forward {:.3}, GradCAM backward {:.3}, affinity {:.3}, upsample {:.3}, write {:.3}",
            sum(&|t| t.total()),
            sum(&|t| t.decode),
            sum(&|t| t.stages.forward),
            sum(&|t| t.stages.backward),
            sum(&|t| t.stages.affinity),
            sum(&|t| t.stages.resize),
            sum(&|t| t.write),
        ))
    }

    /// The JSON written by `CamsConfig::report`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        json!({
            "model": self.model,
            "threads": self.threads,
            "images": self.written.iter().map(|t| json!({
                "id": t.id,
                "seconds": t.total(),
                "decode": t.decode, "forward": t.stages.forward, "backward": t.stages.backward,
                "affinity": t.stages.affinity, "resize": t.stages.resize, "write": t.write,
            })).collect::<Vec<_>>(),
            "failures": self.failures.iter().map(|(id, e)| json!({"id": id, "error": e})).collect::<Vec<_>>(),
        })
    }
}

/// The name of the CAM stage in its manifest.
pub const STAGE: &str = "cams";

/// The settings that make the CAM files, as recorded in the stage manifest of the output
/// folder: the model (by name and, for a local file, fingerprint), the classes and their
/// prompts, and every CAM setting except the memory limit; the threads, the shard and the
/// report change nothing in the files and are left out.
pub fn manifest(config: &CamsConfig) -> Result<clip_es_data::manifest::Manifest, String> {
    let (c, s) = (config, &config.settings);
    let mut m = clip_es_data::manifest::Manifest::new(STAGE);
    m.set("model", clip_es_data::manifest::model_identity(&c.model)?);
    m.set("classes", c.classes.names.join(","));
    m.set("prompt_names", c.classes.prompt_names.join(","));
    m.set("background", c.classes.background.join(","));
    m.set(
        "box_threshold",
        s.box_threshold.unwrap_or(c.classes.box_threshold),
    );
    m.set("templates", format!("{:?}", s.templates));
    m.set("save_unrefined", s.save_unrefined);
    m.set("exact_pos_embed", s.exact_pos_embed);
    m.set("augment", format!("{:?}", s.augment));
    m.set("max_side", s.max_side);
    m.set("exif", format!("{:?}", c.exif));
    Ok(m)
}

/// The CAM stage over a dataset. Status lines and failures go to `progress`.
pub fn run(config: &CamsConfig, progress: &dyn Progress) -> Result<CamsReport, CamsError> {
    let pool = thread_pool(config.threads).map_err(CamsError::Invalid)?;
    pool.install(|| run_in_pool(config, progress))
}

fn run_in_pool(config: &CamsConfig, progress: &dyn Progress) -> Result<CamsReport, CamsError> {
    let d = &config.data;
    let (ids, source, note) = datasets::plan(
        d.split.as_deref(),
        d.labels.as_deref(),
        d.annotations.as_deref(),
    )?;
    if let Some(note) = note {
        progress.message(&format!("note: {note}"));
    }
    if !d.images.is_dir() {
        return Err(CamsError::Invalid(format!(
            "{} (images): not a directory",
            d.images.display()
        )));
    }
    // Brings the GPU up once: a missing driver is a bad option, found before any work.
    open_device(config.settings.device)?;
    let mut report = CamsReport {
        in_split: ids.len(),
        threads: rayon::current_num_threads(),
        ..CamsReport::default()
    };
    let ids: Vec<String> = match config.shard {
        Some((i, n)) => {
            if n == 0 || i >= n {
                return Err(CamsError::Invalid(format!(
                    "shard {i}/{n}: need 0 <= I < N"
                )));
            }
            ids.into_iter()
                .enumerate()
                .filter(|(k, _)| k % n == i)
                .map(|(_, id)| id)
                .collect()
        }
        None => ids,
    };
    report.in_shard = ids.len();
    let out = &config.out;
    // Before the model is loaded: an output that cannot be written is found now, not after
    // the work.
    crate::atomic::probe_dir(out).map_err(CamsError::Invalid)?;
    // CAMs made with another model or other settings are never kept as if they were this run's.
    let has_outputs = clip_es_data::manifest::holds_files(out, &["npz", "npy"]);
    manifest(config)
        .and_then(|m| m.claim(out, config.overwrite, has_outputs))
        .map_err(CamsError::Invalid)?;
    if let Some(r) = &config.report {
        crate::atomic::probe_file_dir(r).map_err(CamsError::Invalid)?;
    }
    let out_path = |id: &str| out.join(format!("{id}.npz"));
    let todo: Vec<&String> = ids
        .iter()
        .filter(|id| config.overwrite || !out_path(id).exists())
        .collect();
    report.already_done = ids.len() - todo.len();
    progress.message(&format!(
        "{} images in the split{}, {} already done, {} to process",
        report.in_split,
        config
            .shard
            .map(|(i, n)| format!(" ({} in shard {i}/{n})", ids.len()))
            .unwrap_or_default(),
        report.already_done,
        todo.len()
    ));
    if todo.is_empty() {
        return Ok(report);
    }
    // Partial files of a killed earlier run of these images (only this shard writes them).
    let finals: Vec<PathBuf> = todo.iter().map(|id| out_path(id)).collect();
    crate::atomic::remove_stale_partials(out, finals.iter().map(PathBuf::as_path))
        .map_err(|e| CamsError::Invalid(format!("cleaning {}: {e}", out.display())))?;

    let t = Instant::now();
    let cams = Cams::load(&config.model, config.classes.clone(), &config.settings)?;
    let clip = cams.clip();
    report.model = clip.files().weights.display().to_string();
    progress.message(&format!(
        "model {} ({} blocks, width {}) and {} + {} text prompts ready in {:.1} s",
        clip.files().weights.display(),
        clip.config().vision.layers,
        clip.config().vision.width,
        config.classes.names.len(),
        config.classes.background.len(),
        t.elapsed().as_secs_f64()
    ));

    let exif = ExifNotice::new(config.exif);
    progress.start("cams", todo.len());
    for id in todo {
        let result = source
            .sample(id, &d.images, &config.classes)
            .map_err(CamsError::Invalid)
            .and_then(|sample| {
                let read = |path: &Path| {
                    let (image, orientation) = DecodedImage::open_with(path, config.exif)?;
                    exif.note(id, orientation, progress);
                    Ok(image)
                };
                cams_file(&cams, &sample, &out_path(id), read)
            });
        match result {
            Ok(times) => report.written.push(times),
            Err(e) => {
                let e = e.to_string();
                progress.failed(id, &e);
                report.failures.push((id.clone(), e));
            }
        }
        progress.advance();
    }
    progress.finish();
    progress.message(&format!(
        "{} image(s) written to {}",
        report.written.len(),
        out.display()
    ));
    if let Some(line) = report.timing_summary() {
        progress.message(&line);
    }
    if let Some(path) = &config.report {
        let text = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| CamsError::Invalid(e.to_string()))?;
        crate::atomic::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| CamsError::Invalid(format!("writing {}: {e}", path.display())))?;
    }
    Ok(report)
}

/// One image of [`run`]: decode, CAMs, atomic write.
fn cams_file(
    cams: &Cams,
    sample: &Sample,
    out: &Path,
    read: impl Fn(&Path) -> Result<DecodedImage, CamsError>,
) -> Result<ImageTimes, CamsError> {
    let in_file = |e: String| CamsError::Invalid(format!("{}: {e}", sample.image.display()));
    let t = Instant::now();
    let image = read(&sample.image)?;
    let decode = t.elapsed().as_secs_f64();
    let (maps, stages) = cams
        .image(&image, &sample.labels)
        .map_err(|e| in_file(e.to_string()))?;
    drop(image);
    let t = Instant::now();
    maps.to_cam_file(&sample.labels).write_npz(out)?;
    Ok(ImageTimes {
        id: sample.id.clone(),
        decode: decode + stages.input,
        stages,
        write: t.elapsed().as_secs_f64(),
    })
}
