//! The pseudo-mask stage (`clip-es masks`): a mask for every id of a split file, in parallel,
//! resumable, written atomically as label PNGs, with optional confidence maps and overlays, its
//! settings recorded in the output folder's manifest.

use super::crf::KernelCache;
use super::one_image::{pseudo_mask_file, MaskError, MaskOptions};
use crate::cam_files::CamFile;
use crate::datasets::{image_path, read_split};
use crate::progress::{for_each_image, ExifNotice, Progress};
use clip_es_data::labels::encode_label_png;
use clip_es_image::{ExifOrientation, Rgb8Image};
use std::path::PathBuf;

/// The masks stage's settings.
#[derive(Clone, Debug)]
pub struct MasksConfig {
    /// Directory of CAM files: `<id>.npz` (clip-es) or `<id>.npy` (the reference's dicts).
    pub cams: PathBuf,
    /// Directory of the images.
    pub images: PathBuf,
    /// Split file: the image ids (first token per line).
    pub split: PathBuf,
    /// Output directory for `<id>.png`.
    pub out: PathBuf,
    pub options: MaskOptions,
    /// Indexed PNGs with the VOC palette instead of grayscale.
    pub palette: bool,
    /// Also write the confidence maps (float32 `<id>.npy`) into this directory.
    pub save_confidence: Option<PathBuf>,
    /// Recompute masks that exist (by default they are skipped).
    pub overwrite: bool,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// Also write an overlay picture per image (`<dir>/<id>.png`): VOC-palette colours by
    /// label value, legend names from the class set (label value `c` is class `c - 1`).
    pub overlays: Option<(PathBuf, crate::classes::ClassSet)>,
    /// EXIF orientation tags: ignored (the stored grid, as the CAM stage reads by default) or
    /// applied (give the same to the CAM stage).
    pub exif: ExifOrientation,
    /// Bytes the stage may use for the images in flight together (`None`: what the system
    /// reports available at the start); see [`crate::budget::mask_peak_bytes`].
    pub memory_limit: Option<u64>,
}

impl MasksConfig {
    /// The reference's settings (see [`MaskOptions::default`]).
    pub fn new(cams: PathBuf, images: PathBuf, split: PathBuf, out: PathBuf) -> Self {
        MasksConfig {
            cams,
            images,
            split,
            out,
            options: MaskOptions::default(),
            palette: false,
            save_confidence: None,
            overwrite: false,
            threads: None,
            overlays: None,
            exif: ExifOrientation::Ignore,
            memory_limit: None,
        }
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug, Default)]
pub struct MasksReport {
    /// Ids in the split.
    pub images: usize,
    pub written: usize,
    /// Masks already present (not recomputed).
    pub skipped: usize,
    /// Images that failed, with the reason.
    pub failures: Vec<(String, String)>,
}

/// What [`run`] did with one image.
enum Outcome {
    Written,
    Skipped,
}

/// Could not make masks at all (one bad image is a failure in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum MasksRunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Split(#[from] crate::datasets::DatasetError),
}

/// One image of [`run`]: CAMs + image -> mask (and confidence), written atomically.
fn mask_image(
    config: &MasksConfig,
    gate: &crate::budget::MemoryGate,
    kernels: &KernelCache,
    exif: &ExifNotice,
    progress: &dyn Progress,
    id: &str,
) -> Result<Outcome, MaskError> {
    let mask_path = config.out.join(format!("{id}.png"));
    let conf_path = config
        .save_confidence
        .as_ref()
        .map(|d| d.join(format!("{id}.npy")));
    let overlay_path = config
        .overlays
        .as_ref()
        .map(|(d, _)| d.join(format!("{id}.png")));
    if !config.overwrite
        && mask_path.is_file()
        && conf_path.as_ref().is_none_or(|p| p.is_file())
        && overlay_path.as_ref().is_none_or(|p| p.is_file())
    {
        return Ok(Outcome::Skipped);
    }
    let cam_path = CamFile::locate(&config.cams, id)?;
    let image_file =
        image_path(&config.images, id).map_err(|m| MaskError::invalid(&config.images, m))?;
    let (image, orientation) = clip_es_image::load_rgb_with(&image_file, config.exif)?;
    exif.note(id, orientation, progress);
    // The image's size bounds what the CAM file may inflate to.
    let cam = CamFile::read_for_image(&cam_path, image.height as usize, image.width as usize)?;
    // The CRF's lattices and marginals are the large allocations: reserved first.
    let (w, h) = (image.width as usize, image.height as usize);
    let (labels, crf) = (cam.keys.len() + 1, config.options.use_crf);
    let _held = gate
        .reserve(crate::budget::mask_peak_bytes(w * h, labels, crf))
        .map_err(|limit| {
            MaskError::invalid(
                &image_file,
                crate::budget::mask_over_limit(w, h, labels, crf, limit),
            )
        })?;
    let mask = pseudo_mask_file(&cam, &cam_path, &image, &config.options, kernels)?;
    let png = encode_label_png(&mask.labels, mask.width, mask.height, config.palette)
        .map_err(|e| MaskError::invalid(&mask_path, format!("PNG encoding: {e}")))?;
    if let (Some(p), Some((_, classes))) = (&overlay_path, &config.overlays) {
        let png = overlay_png(&image, &mask.labels, classes)
            .map_err(|e| MaskError::invalid(p, format!("PNG encoding: {e}")))?;
        crate::atomic::write_bytes_atomic(p, &png).map_err(|source| MaskError::Io {
            path: p.clone(),
            source,
        })?;
    }
    // The mask is written last: its presence marks the image as done.
    if let Some(p) = &conf_path {
        let arr = clip_es_pickle::NdArray {
            dtype: clip_es_pickle::DType::F32,
            shape: vec![mask.height, mask.width],
            data: mask
                .confidence
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        let bytes =
            clip_es_pickle::encode_npy(&arr).map_err(|e| MaskError::invalid(p, e.to_string()))?;
        crate::atomic::write_bytes_atomic(p, &bytes).map_err(|source| MaskError::Io {
            path: p.clone(),
            source,
        })?;
    }
    if let Err(source) = crate::atomic::write_bytes_atomic(&mask_path, &png) {
        if let Some(p) = &conf_path {
            let _ = std::fs::remove_file(p);
        }
        return Err(MaskError::Io {
            path: mask_path,
            source,
        });
    }
    Ok(Outcome::Written)
}

/// The overlay picture of a label map: VOC-palette colours by label value, a legend naming the
/// classes present (label value `c` is `classes.names[c - 1]`) and "not confident".
pub fn overlay_png(
    image: &Rgb8Image,
    labels: &[u8],
    classes: &crate::classes::ClassSet,
) -> Result<Vec<u8>, png::EncodingError> {
    use crate::viz::{self, LegendEntry, OverlayStyle};
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[l as usize] = true);
    let mut legend: Vec<LegendEntry> = (1..255u8)
        .filter(|&l| present[l as usize])
        .map(|l| LegendEntry {
            name: classes
                .names
                .get(l as usize - 1)
                .cloned()
                .unwrap_or_else(|| format!("class {l}")),
            colour: viz::voc_colour(l),
        })
        .collect();
    if present[255] {
        legend.push(LegendEntry {
            name: "not confident".into(),
            colour: [200, 200, 200],
        });
    }
    viz::overlay(
        image,
        labels,
        &|l| Some(viz::voc_colour(l)),
        &legend,
        &OverlayStyle::default(),
    )
    .encode_png()
}

/// The name of the masks stage in its manifest.
pub const STAGE: &str = "masks";

/// The settings that make the pseudo masks, as recorded in the stage manifest of the output
/// folder (the memory limit and the threads change nothing in them and are left out).
pub fn manifest(config: &MasksConfig) -> clip_es_data::manifest::Manifest {
    let o = &config.options;
    let mut m = clip_es_data::manifest::Manifest::new(STAGE);
    m.set("confidence", o.confidence);
    m.set("crf", o.use_crf);
    if o.use_crf {
        m.set("crf_image", format!("{:?}", o.crf_image));
        m.set("crf_params", &o.crf);
    }
    m.set("cam_key", format!("{:?}", o.cam_kind));
    m.set("palette", config.palette);
    m.set("exif", format!("{:?}", config.exif));
    m
}

/// The masks stage: a pseudo mask for every id of the split (in parallel), resumable (finished
/// masks are skipped), atomic writes; an image that fails is reported and skipped.
pub fn run(config: &MasksConfig, progress: &dyn Progress) -> Result<MasksReport, MasksRunError> {
    config.options.validate().map_err(MasksRunError::Config)?;
    let ids = read_split(&config.split)?;
    for (what, dir) in [("CAMs", &config.cams), ("images", &config.images)] {
        if !dir.is_dir() {
            return Err(MasksRunError::Config(format!(
                "{} ({what}): not a directory",
                dir.display()
            )));
        }
    }
    // Outputs that cannot be written are found now, not after the work.
    for dir in std::iter::once(&config.out)
        .chain(config.save_confidence.as_ref())
        .chain(config.overlays.as_ref().map(|(d, _)| d))
    {
        crate::atomic::probe_dir(dir).map_err(MasksRunError::Config)?;
    }
    // Masks made with other settings are never kept as if they were this run's.
    let has_outputs = clip_es_data::manifest::holds_files(&config.out, &["png"]);
    manifest(config)
        .claim(&config.out, config.overwrite, has_outputs)
        .map_err(MasksRunError::Config)?;
    let kernels = KernelCache::default();
    let exif = ExifNotice::new(config.exif);
    let gate = crate::budget::MemoryGate::new(
        config
            .memory_limit
            .or_else(crate::budget::available_bytes)
            .unwrap_or(u64::MAX),
    );
    let results = for_each_image(&ids, config.threads, "masks", progress, |id| {
        mask_image(config, &gate, &kernels, &exif, progress, id)
    })
    .map_err(MasksRunError::Config)?;
    let mut report = MasksReport {
        images: ids.len(),
        ..MasksReport::default()
    };
    for (id, r) in results {
        match r {
            Ok(Outcome::Written) => report.written += 1,
            Ok(Outcome::Skipped) => report.skipped += 1,
            Err(e) => report.failures.push((id, e.to_string())),
        }
    }
    Ok(report)
}
