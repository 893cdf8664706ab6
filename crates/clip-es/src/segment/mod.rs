//! Segmenting any photo (`clip-es segment`, docs/segment.md): class names typed by the user,
//! taken from a preset, or found by label-free tagging ([`crate::tags`]), then the CAM stage
//! ([`crate::cams::Cams::image`], paper sections 3.1-3.3) and the pseudo-mask stage
//! ([`crate::masks::pseudo_mask_file`], section 3.4) exactly as `clip-es cams` + `clip-es masks`
//! run them, and pictures ([`crate::viz`]).
//!
//! The photo is turned upright by its EXIF orientation before every step (CLIP input, CRF
//! image, pictures); the JSON summary says which orientation was applied.

use crate::cams::{CamSettings, Cams, CamsError};
use crate::classes::ClassSet;
use crate::gradcam::{CamError, ImageCams};
use crate::masks::{pseudo_mask_file, KernelCache, MaskError, MaskOptions, PseudoMask};
use crate::tags::{tag_image, TagOptions, Tags};
use clip_es_image::{DecodedImage, Rgb8Image};
use std::path::{Path, PathBuf};

mod class_list;
mod outputs;
mod photos;
mod stage;

pub use class_list::{
    background_without_classes, default_vocabulary, parse_classes, preset_classes, ClassError,
};
pub use outputs::{
    check_outputs, legend_entries, output_files, overlay_picture, slug, tags_json, write_outputs,
    OutputFiles,
};
pub use photos::{collect_images, PlanError, IMAGE_EXTENSIONS};
pub use stage::{
    run, run_until, PhotoResult, SegmentConfig, SegmentReport, SegmentRunError, DEFAULT_OUT,
};

/// Label values 1..=254 are classes; 0 is background and 255 "not confident".
pub use crate::classes::MAX_CLASSES;

/// A class that can be segmented: one entry of a [`ClassSet`] with its label value and colour.
pub use crate::classes::SegmentClass;

/// Why one image could not be segmented.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Cam { path: PathBuf, source: CamError },
    #[error("{path}: {source}")]
    Cams {
        path: PathBuf,
        source: Box<CamsError>,
    },
    #[error("{0}")]
    Image(#[from] clip_es_image::ImageError),
    #[error(transparent)]
    Mask(#[from] MaskError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Settings of the stages `segment` runs besides the CAM settings.
#[derive(Clone, Debug, Default)]
pub struct SegmentOptions {
    pub mask: MaskOptions,
    pub tags: TagOptions,
}

impl SegmentOptions {
    /// The ranges of the mask and tag settings (checked before the model loads).
    pub fn validate(&self) -> Result<(), String> {
        self.mask.validate()?;
        self.tags.validate()
    }
}

/// Which classes an image is segmented for.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// These candidates (indices), in this order.
    Fixed(Vec<usize>),
    /// Tag every image with the candidates as the vocabulary.
    Tags,
}

/// Everything `segment` needs: the CAM stage ([`Cams`], holding the model and the text
/// classifier of the candidate classes, built once), which candidates to use, the mask
/// settings.
pub struct Segmenter {
    cams: Cams,
    pub candidates: Vec<SegmentClass>,
    pub selection: Selection,
    pub options: SegmentOptions,
    kernels: KernelCache,
}

/// The result for one image.
pub struct Segmented {
    pub path: PathBuf,
    /// EXIF orientation applied (1: none).
    pub orientation: u16,
    /// The upright photo as the CRF saw it.
    pub image: Rgb8Image,
    /// Candidate indices segmented, in CAM order.
    pub classes: Vec<usize>,
    pub cams: ImageCams,
    pub mask: PseudoMask,
    pub tags: Option<Tags>,
}

impl Segmenter {
    /// The CAM stage for the candidates (their ids must be their positions + 1, as
    /// [`parse_classes`], [`preset_classes`] give them) with these background words, less any
    /// that is also the name of a candidate.
    pub fn new(
        clip: clip_es_model::Clip,
        candidates: Vec<SegmentClass>,
        background: Vec<String>,
        box_threshold: f64,
        settings: &CamSettings,
        selection: Selection,
        options: SegmentOptions,
    ) -> Result<Self, CamsError> {
        if let Some((i, c)) = candidates
            .iter()
            .enumerate()
            .find(|(i, c)| c.id as usize != i + 1)
        {
            return Err(CamsError::Invalid(format!(
                "class {} has label value {}, not {}",
                c.name,
                c.id,
                i + 1
            )));
        }
        let background = background_without_classes(background, &candidates);
        let classes = ClassSet::from_segment_classes(&candidates, background, box_threshold);
        Ok(Segmenter {
            cams: Cams::new(clip, classes, settings)?,
            candidates,
            selection,
            options,
            kernels: KernelCache::default(),
        })
    }

    /// The CAM stage (model, classifier, settings).
    pub fn cams(&self) -> &Cams {
        &self.cams
    }

    /// The photo upright: its EXIF orientation and the decoded image turned by it.
    pub fn upright(path: &Path) -> Result<(u16, DecodedImage), SegmentError> {
        let (decoded, orientation) =
            DecodedImage::open_with(path, clip_es_image::ExifOrientation::Apply)?;
        Ok((orientation, decoded))
    }

    /// Tags an upright photo with the candidates as the vocabulary.
    pub fn tag(&self, decoded: &DecodedImage, path: &Path) -> Result<Tags, SegmentError> {
        let cam_err = |source| SegmentError::Cam {
            path: path.to_path_buf(),
            source,
        };
        let vision = self.cams.clip().vision();
        let patch = vision.patch_size();
        let (w, h) = (decoded.width() as usize, decoded.height() as usize);
        if w < patch || h < patch {
            return Err(cam_err(CamError::TooSmall {
                width: w,
                height: h,
                patch,
            }));
        }
        // The size the CAMs are computed at (the rule of every stage: a large photo downscaled
        // to --max-side), refused when the tagging pass alone exceeds the memory limit.
        let config = &self.cams.clip().config().vision;
        let threads = rayon::current_num_threads();
        let peak = |iw: usize, ih: usize| {
            clip_es_model::input_size::encode_peak_bytes(config, iw, ih, threads, true)
        };
        let limit = self
            .cams
            .memory_limit()
            .or_else(crate::budget::available_bytes);
        let budget = limit.map(|limit| clip_es_model::MemoryBudget {
            limit,
            purpose: "tags",
            peak_bytes: &peak,
        });
        let (iw, ih) =
            clip_es_model::vit_input_size(w, h, patch, self.cams.max_side(), budget.as_ref())
                .map_err(|e| SegmentError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        let input = decoded.clip_input(ih, iw)?;
        tag_image(
            vision,
            self.cams.classifier(),
            &input.data,
            ih,
            iw,
            &TagOptions {
                round_pos_embed_f16: self.cams.options().round_pos_embed_f16,
                ..self.options.tags
            },
        )
        .map_err(|e| cam_err(CamError::Model(e)))
    }

    /// Segments one photo.
    pub fn segment(&self, path: &Path) -> Result<Segmented, SegmentError> {
        let (orientation, decoded) = Self::upright(path)?;
        // The CRF's image (OpenCV's decoding), turned upright the same way.
        let (image, _) = clip_es_image::load_rgb_with(path, clip_es_image::ExifOrientation::Apply)?;
        if (image.width, image.height) != (decoded.width(), decoded.height()) {
            return Err(SegmentError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "decoders disagree on the size ({}x{} and {}x{})",
                    image.width,
                    image.height,
                    decoded.width(),
                    decoded.height()
                ),
            });
        }
        let (classes, tags) = match &self.selection {
            Selection::Fixed(c) => (c.clone(), None),
            Selection::Tags => {
                // The CAMs come next at the same input: a photo too large for them (with the
                // most tags it may get) fails before its tagging pass is spent.
                let (w, h) = (decoded.width() as usize, decoded.height() as usize);
                let patch = self.cams.clip().config().vision.patch_size;
                if w >= patch && h >= patch {
                    let tags = self.options.tags.max_tags.min(self.candidates.len());
                    self.cams
                        .vit_input(w, h, tags.max(1))
                        .map_err(|e| SegmentError::Invalid {
                            path: path.to_path_buf(),
                            message: e.to_string(),
                        })?;
                }
                let tags = self.tag(&decoded, path)?;
                (tags.chosen.clone(), Some(tags))
            }
        };
        let (cams, _) =
            self.cams
                .image(&decoded, &classes)
                .map_err(|source| SegmentError::Cams {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
        // The CAMs go to the mask stage as `clip-es cams` stores them (float16), keyed by
        // candidate index = label value - 1.
        let cam_file = cams.to_cam_file(&classes);
        // The CRF at the photo's full size is the largest allocation left: checked first, as
        // the masks stage does (one photo at a time here).
        let (w, h) = (image.width as usize, image.height as usize);
        let (labels, crf) = (cam_file.keys.len() + 1, self.options.mask.use_crf);
        let limit = self
            .cams
            .memory_limit()
            .or_else(crate::budget::available_bytes);
        if let Some(limit) = limit {
            if crate::budget::mask_peak_bytes(w * h, labels, crf) > limit {
                return Err(SegmentError::Invalid {
                    path: path.to_path_buf(),
                    message: crate::budget::mask_over_limit(w, h, labels, crf, limit),
                });
            }
        }
        let mask = pseudo_mask_file(&cam_file, path, &image, &self.options.mask, &self.kernels)?;
        Ok(Segmented {
            path: path.to_path_buf(),
            orientation,
            image,
            classes,
            cams,
            mask,
            tags,
        })
    }
}
