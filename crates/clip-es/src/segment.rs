//! Segmenting any photo (`clip-es segment`, docs/segment.md): class names typed by the user,
//! taken from a preset, or found by label-free tagging ([`crate::tags`]), then the CAM stage
//! ([`crate::cams::Cams::image`], paper sections 3.1-3.3) and the pseudo-mask stage
//! ([`crate::masks::pseudo_mask_file`], section 3.4) exactly as `clip-es cams` + `clip-es masks`
//! run them, and pictures ([`crate::viz`]).
//!
//! The photo is turned upright by its EXIF orientation before every step (CLIP input, CRF
//! image, pictures); the JSON summary says which orientation was applied.

use crate::cam::{CamError, ImageCams};
use crate::cams::{CamSettings, Cams, CamsError};
use crate::classes::ClassSet;
use crate::masks::{
    encode_label_png, pseudo_mask_file, KernelCache, MaskError, MaskOptions, PseudoMask,
};
use crate::tags::{tag_image, TagOptions, Tags};
use crate::viz::{self, LegendEntry, OverlayStyle};
use clip_es_image::{DecodedImage, Rgb8Image};
use serde_json::json;
use std::path::{Path, PathBuf};

mod stage;
pub use stage::{
    run, run_until, PhotoResult, SegmentConfig, SegmentReport, SegmentRunError, DEFAULT_OUT,
};

/// Label values 1..=254 are classes; 0 is background and 255 "not confident".
pub use crate::classes::MAX_CLASSES;

/// A class that can be segmented: one entry of a [`ClassSet`] with its label value and colour.
pub use crate::classes::SegmentClass;

/// A problem with the class names given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClassError(pub String);

/// The classes of a preset or class file, with its ids (position + 1) and VOC-palette colours.
pub fn preset_classes(set: &ClassSet) -> Result<Vec<SegmentClass>, ClassError> {
    set.segment_classes().map_err(ClassError)
}

/// The default vocabulary of label-free tagging: the VOC classes (ids 1..20, VOC prompts), then
/// the COCO classes not among them (COCO prompts), with COCO's background words (VOC's also
/// list `keyboard` and `sign`, which COCO has as classes) and VOC's box threshold.
pub fn default_vocabulary() -> ClassSet {
    let mut set = ClassSet::voc();
    let coco = ClassSet::coco();
    for (n, p) in coco.names.iter().zip(&coco.prompt_names) {
        if !set.names.contains(n) {
            set.names.push(n.clone());
            set.prompt_names.push(p.clone());
        }
    }
    set.background = coco.background;
    set
}

/// Parses `--classes`: classes separated by `,`, synonyms of one class by `;`
/// (`"cat,sofa,person with clothes;people"`). With a preset, every name must be one of its
/// classes (its prompts, synonyms and ids are used) and the result holds indices into the
/// preset; free names get ids 1..k in the order given and distinct colours.
pub fn parse_classes(
    text: &str,
    preset: Option<&[SegmentClass]>,
) -> Result<Vec<SegmentClass>, ClassError> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > MAX_CLASSES {
        return Err(ClassError(format!(
            "--classes: {} classes; at most {MAX_CLASSES} (label values 1..254; 255 marks pixels that are not confident)",
            items.len()
        )));
    }
    let colours = viz::distinct_colours(items.len());
    let mut out: Vec<SegmentClass> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let synonyms: Vec<&str> = item.split(';').map(str::trim).collect();
        if synonyms.iter().any(|s| s.is_empty()) {
            return Err(ClassError(format!(
                "--classes: empty class name (item {} of {text:?})",
                i + 1
            )));
        }
        let name = synonyms[0];
        // `Cat` and `cat` would be two classes with the same prompt, splitting its pixels.
        if let Some(first) = out
            .iter()
            .find(|c| c.name.to_lowercase() == name.to_lowercase())
        {
            return Err(ClassError(if first.name == name {
                format!("--classes: `{name}` is given twice")
            } else {
                format!(
                    "--classes: `{}` and `{name}` name the same class (names are compared ignoring case)",
                    first.name
                )
            }));
        }
        let class = match preset {
            Some(p) => {
                if synonyms.len() > 1 {
                    return Err(ClassError(format!(
                        "--classes: `{item}`: a preset's classes take their synonyms from the preset; give the class name alone"
                    )));
                }
                p.iter().find(|c| c.name == name).cloned().ok_or_else(|| {
                    let names: Vec<&str> = p.iter().map(|c| c.name.as_str()).collect();
                    ClassError(format!(
                        "--classes: `{name}` is not a class of the dataset (its classes: {})",
                        names.join(", ")
                    ))
                })?
            }
            None => SegmentClass {
                name: name.to_string(),
                prompt: synonyms.join(","),
                id: (i + 1) as u8,
                colour: colours[i],
            },
        };
        out.push(class);
    }
    Ok(out)
}

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

/// The background words less those that name one of the classes (a class "grass" would
/// otherwise compete with the background word "grass").
pub fn background_without_classes(mut words: Vec<String>, classes: &[SegmentClass]) -> Vec<String> {
    words.retain(|w| !classes.iter().any(|c| c.name.eq_ignore_ascii_case(w)));
    words
}

/// File names of one image's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputFiles {
    pub mask: PathBuf,
    pub overlay: PathBuf,
    pub heat_maps: Vec<PathBuf>,
    pub summary: PathBuf,
}

/// A class name made safe for a file name: lower case letters and digits, `-` for the rest.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "class".into()
    } else {
        s
    }
}

/// The output names for image `stem` in `dir`: `<stem>.png` (label mask), `<stem>.overlay.png`,
/// `<stem>.heat.<id>-<name>.png` per class, `<stem>.json`.
pub fn output_files(dir: &Path, stem: &str, classes: &[&SegmentClass]) -> OutputFiles {
    OutputFiles {
        mask: dir.join(format!("{stem}.png")),
        overlay: dir.join(format!("{stem}.overlay.png")),
        heat_maps: classes
            .iter()
            .map(|c| dir.join(format!("{stem}.heat.{}-{}.png", c.id, slug(&c.name))))
            .collect(),
        summary: dir.join(format!("{stem}.json")),
    }
}

/// File extensions taken from directories.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// Why a run cannot start: its photos or its output folder.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The photos to process with the stem of their outputs: files as given, directories expanded
/// to their images (sorted, not recursive). A directory without images is an error.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PlanError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| PlanError(format!("reading {}: {e}", input.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            if found.is_empty() {
                return Err(PlanError(format!(
                    "{}: no images in this directory (looked for .{})",
                    input.display(),
                    IMAGE_EXTENSIONS.join(" .")
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    out.into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| PlanError(format!("{}: not a file name", p.display())))?;
            Ok((p, stem))
        })
        .collect()
}

/// `path` made absolute with its existing part resolved (symbolic links, `..`), so that two
/// spellings of one place compare equal; the part that does not exist yet is appended as given.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |p, n| p.join(n));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Checks, before the model is loaded, that the run's outputs can be written and hurt nothing:
/// `out` is not an input folder nor inside one (a rerun would take the outputs for photos, and
/// `<out>/<photo>.png` could be a photo); no output file of one photo is also an output of
/// another photo (`x.jpg` writes `x.overlay.png`, which is also the mask of `x.overlay.jpg`)
/// or an input photo. Every file a photo may get is checked: in label-free mode a heat map for
/// each candidate. Then `out` is created and a file is written into it and removed
/// ([`crate::atomic::probe_dir`]), so a file, a read-only folder or a full disk is reported now.
/// `tags_only`: the run writes `<out>/tags.json` alone.
pub fn check_outputs(
    inputs: &[PathBuf],
    images: &[(PathBuf, String)],
    out: &Path,
    classes: &[&SegmentClass],
    tags_only: bool,
) -> Result<(), PlanError> {
    let out_at = resolved(out);
    for input in inputs.iter().filter(|p| p.is_dir()) {
        if out_at.starts_with(resolved(input)) {
            return Err(PlanError(format!(
                "--out {} is the input folder {} or inside it: outputs would be mixed with the photos (and taken for photos by a rerun); give an --out outside the input folders",
                out.display(),
                input.display()
            )));
        }
    }
    let photos: std::collections::HashMap<PathBuf, &Path> = images
        .iter()
        .map(|(p, _)| (resolved(p), p.as_path()))
        .collect();
    // Each file the run may write, with the photo it belongs to (none: the tag summary).
    let mut planned: Vec<(PathBuf, Option<&Path>)> = Vec::new();
    if tags_only {
        planned.push((out_at.join("tags.json"), None));
    } else {
        for (photo, stem) in images {
            let files = output_files(&out_at, stem, classes);
            for file in [files.mask, files.overlay, files.summary]
                .into_iter()
                .chain(files.heat_maps)
            {
                planned.push((file, Some(photo.as_path())));
            }
        }
    }
    let mut owners: std::collections::HashMap<&Path, &Path> = std::collections::HashMap::new();
    for (file, photo) in &planned {
        let shown = out.join(file.file_name().unwrap_or_default());
        if let Some(input) = photos.get(file) {
            return Err(PlanError(format!(
                "{}: the output {} of {} would replace this input photo; give another --out",
                input.display(),
                shown.display(),
                photo.map_or("the tags".to_string(), |p| p.display().to_string())
            )));
        }
        let Some(photo) = *photo else { continue };
        if let Some(first) = owners.insert(file.as_path(), photo) {
            return Err(PlanError(if first == photo {
                format!("{}: given twice", photo.display())
            } else {
                format!(
                    "{} and {} would both write {}: rename one of them, or segment them into different --out folders",
                    first.display(),
                    photo.display(),
                    shown.display()
                )
            }));
        }
    }
    crate::atomic::probe_dir(out).map_err(PlanError)
}

/// The legend of an overlay: the classes that have pixels in the mask, then "not confident"
/// when the mask has such pixels.
pub fn legend_entries(classes: &[&SegmentClass], labels: &[u8]) -> Vec<LegendEntry> {
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[l as usize] = true);
    let mut legend: Vec<LegendEntry> = classes
        .iter()
        .filter(|c| present[c.id as usize])
        .map(|c| LegendEntry {
            name: c.name.clone(),
            colour: c.colour,
        })
        .collect();
    if labels.contains(&viz::UNCONFIDENT) {
        legend.push(LegendEntry {
            name: "not confident".into(),
            colour: [200, 200, 200],
        });
    }
    legend
}

/// The overlay picture of a label mask: classes coloured by `classes` (looked up by label value).
pub fn overlay_picture(image: &Rgb8Image, labels: &[u8], classes: &[&SegmentClass]) -> viz::Canvas {
    let colour_of = |l: u8| classes.iter().find(|c| c.id == l).map(|c| c.colour);
    viz::overlay(
        image,
        labels,
        &colour_of,
        &legend_entries(classes, labels),
        &OverlayStyle::default(),
    )
}

/// Writes one image's outputs (heat maps, overlay, JSON summary, label mask) and returns their
/// names and the JSON summary. All or none: every file is first written under a temporary
/// name, and only when all are complete are they renamed into place (the mask last); a failure
/// (a full disk, a folder in the way) removes what this call wrote, so a photo that fails
/// leaves none of its files. Heat maps that the photo's previous summary lists and this run
/// did not write (a rerun with other classes) are removed: no stale file remains.
pub fn write_outputs(
    seg: &Segmenter,
    result: &Segmented,
    dir: &Path,
    stem: &str,
) -> Result<(OutputFiles, serde_json::Value), SegmentError> {
    let classes: Vec<&SegmentClass> = result.classes.iter().map(|&c| &seg.candidates[c]).collect();
    let files = output_files(dir, stem, &classes);
    let png_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: png::EncodingError| SegmentError::Invalid {
            path,
            message: format!("PNG encoding: {e}"),
        }
    };
    let (w, h) = (result.mask.width, result.mask.height);
    let n = w * h;
    let mut contents: Vec<(&Path, Vec<u8>)> = Vec::with_capacity(classes.len() + 3);
    for (k, (class, file)) in classes.iter().zip(&files.heat_maps).enumerate() {
        let cam = &result.cams.refined[k * n..(k + 1) * n];
        let pic = viz::heat_map(&result.image, cam, &class.name, 0.5);
        contents.push((file.as_path(), pic.encode_png().map_err(png_err(file))?));
    }
    let pic = overlay_picture(&result.image, &result.mask.labels, &classes);
    contents.push((
        files.overlay.as_path(),
        pic.encode_png().map_err(png_err(&files.overlay))?,
    ));

    let count = |v: u8| result.mask.labels.iter().filter(|&&l| l == v).count() as f64 / n as f64;
    let name_of = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    let summary = json!({
        "image": result.path.display().to_string(),
        "width": w,
        "height": h,
        "exif_orientation": result.orientation,
        "orientation_applied": result.orientation != 1,
        "crf": seg.options.mask.use_crf,
        "scales": seg.cams().augment().scales,
        "flip": seg.cams().augment().flip,
        "classes": classes.iter().enumerate().map(|(k, c)| {
            let cam = &result.cams.refined[k * n..(k + 1) * n];
            json!({
                "name": c.name,
                "prompt": c.prompt,
                "id": c.id,
                "colour": c.colour,
                "pixel_fraction": count(c.id),
                "mean_cam": cam.iter().map(|&v| v as f64).sum::<f64>() / n as f64,
                "clip_probability": result.cams.probabilities[k],
            })
        }).collect::<Vec<_>>(),
        "background_fraction": count(0),
        "unconfident_fraction": count(viz::UNCONFIDENT),
        "tags": result.tags.as_ref().map(|t| tags_json(t, &seg.candidates)),
        "files": {
            "mask": name_of(&files.mask),
            "overlay": name_of(&files.overlay),
            "heat_maps": files.heat_maps.iter().map(|p| name_of(p)).collect::<Vec<_>>(),
        },
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON of plain values");
    contents.push((files.summary.as_path(), text.into_bytes()));
    let png = encode_label_png(&result.mask.labels, w, h, false).map_err(png_err(&files.mask))?;
    contents.push((files.mask.as_path(), png));
    let stale = previous_heat_maps(&files.summary, stem)
        .into_iter()
        .filter(|p| !files.heat_maps.contains(p))
        .collect::<Vec<_>>();
    write_all_or_none(&contents).map_err(|(path, source)| SegmentError::Io { path, source })?;
    for file in stale {
        // Best effort: the new results are complete whether or not an old picture goes.
        let _ = std::fs::remove_file(file);
    }
    Ok((files, summary))
}

/// The heat maps that an earlier run listed in the photo's summary `summary`, as paths beside
/// it. Only plain file names of this photo's heat maps (`<stem>.heat.*.png`) are taken, so a
/// damaged or edited summary cannot name any other file.
fn previous_heat_maps(summary: &Path, stem: &str) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(summary) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let dir = summary.parent().unwrap_or(Path::new(""));
    let prefix = format!("{stem}.heat.");
    json["files"]["heat_maps"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str())
                .filter(|n| {
                    n.starts_with(&prefix)
                        && n.ends_with(".png")
                        && crate::datasets::check_id(n).is_ok()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes every `(path, bytes)` under a temporary name, then renames them into place in order.
/// On any failure the temporary files and the files already renamed by this call are removed,
/// and the failing path is returned with its error.
fn write_all_or_none(files: &[(&Path, Vec<u8>)]) -> Result<(), (PathBuf, std::io::Error)> {
    let temps: Vec<PathBuf> = files
        .iter()
        .map(|(p, _)| crate::atomic::temp_path(p))
        .collect();
    let remove = |paths: &[PathBuf]| {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    };
    for (k, ((path, bytes), temp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::write(temp, bytes) {
            remove(&temps[..=k]);
            return Err((path.to_path_buf(), e));
        }
    }
    for (k, ((path, _), temp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::rename(temp, path) {
            remove(&temps[k..]);
            let done: Vec<PathBuf> = files[..k].iter().map(|(p, _)| p.to_path_buf()).collect();
            remove(&done);
            return Err((path.to_path_buf(), e));
        }
    }
    Ok(())
}

/// The chosen tags, then the ten best-scoring classes, as JSON.
pub fn tags_json(tags: &Tags, candidates: &[SegmentClass]) -> serde_json::Value {
    let entry = |c: usize| {
        let s = &tags.scores[c];
        json!({
            "name": candidates[c].name,
            "id": candidates[c].id,
            "score": s.score,
            "global": s.global,
            "local": s.local,
        })
    };
    let mut order: Vec<usize> = (0..tags.scores.len()).collect();
    order.sort_by(|&a, &b| {
        tags.scores[b]
            .score
            .total_cmp(&tags.scores[a].score)
            .then(a.cmp(&b))
    });
    json!({
        "chosen": tags.chosen.iter().map(|&c| entry(c)).collect::<Vec<_>>(),
        "best": order.iter().take(10).map(|&c| entry(c)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_classes_with_synonyms() {
        let c = parse_classes("cat, sofa ,person with clothes;people", None).unwrap();
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cat", "sofa", "person with clothes"]);
        assert_eq!(c[2].prompt, "person with clothes,people");
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_ne!(c[0].colour, c[1].colour);
    }

    #[test]
    fn preset_classes_keep_their_ids_and_prompts() {
        let voc = preset_classes(&ClassSet::voc()).unwrap();
        let c = parse_classes("person,diningtable", Some(&voc)).unwrap();
        assert_eq!((c[0].id, c[1].id), (15, 11));
        assert_eq!(c[0].prompt, "person with clothes,people,human");
        assert_eq!(c[0].colour, viz::voc_colour(15));
    }

    #[test]
    fn bad_class_lists_say_what_is_wrong() {
        let voc = preset_classes(&ClassSet::voc()).unwrap();
        let err = |t: &str, p: Option<&[SegmentClass]>| parse_classes(t, p).unwrap_err().0;
        assert!(err("", None).contains("empty class name"));
        assert!(err("cat,,dog", None).contains("item 2"));
        assert!(err("cat;", None).contains("empty"));
        assert!(err("cat,dog,cat", None).contains("`cat` is given twice"));
        let e = err("Cat, cat", None);
        assert!(e.contains("`Cat` and `cat` name the same class"), "{e}");
        assert!(
            err("dog,Person with clothes;people,person WITH clothes", None)
                .contains("`Person with clothes` and `person WITH clothes`")
        );
        assert!(err("kitty", Some(&voc)).contains("`kitty` is not a class"));
        assert!(err("person;human", Some(&voc)).contains("synonyms"));
        let many: Vec<String> = (0..255).map(|i| format!("c{i}")).collect();
        assert!(err(&many.join(","), None).contains("at most 254"));
        assert_eq!(
            parse_classes(&many[..254].join(","), None).unwrap().len(),
            254
        );
    }

    #[test]
    fn default_vocabulary_is_voc_then_the_rest_of_coco() {
        let v = default_vocabulary();
        assert_eq!(v.names.len(), 80);
        assert_eq!(&v.names[..20], &ClassSet::voc().names[..]);
        assert_eq!(v.names[20], "truck");
        assert!(!v.background.contains(&"keyboard".to_string()));
        let mut sorted = v.names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 80);
    }

    #[test]
    fn a_class_is_not_also_a_background_word() {
        let classes = parse_classes("Grass,cat", None).unwrap();
        let words = ["ground", "grass", "sky"].map(String::from).to_vec();
        assert_eq!(
            background_without_classes(words, &classes),
            ["ground", "sky"].map(String::from).to_vec()
        );
    }

    #[test]
    fn slugs_and_file_names() {
        assert_eq!(slug("Person with clothes"), "person-with-clothes");
        assert_eq!(slug("!!"), "class");
        let c = SegmentClass {
            name: "teddy bear".into(),
            prompt: "teddy bear".into(),
            id: 78,
            colour: [0, 0, 0],
        };
        let f = output_files(Path::new("out"), "img", &[&c]);
        assert_eq!(f.heat_maps[0], Path::new("out/img.heat.78-teddy-bear.png"));
        assert_eq!(f.mask, Path::new("out/img.png"));
    }
}
