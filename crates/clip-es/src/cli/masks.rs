//! `clip-es masks`: CAMs + images -> CRF pseudo masks with confidence (spec section 7,
//! reference `eval_cam_with_crf.py`). Parallel over images, resumable (finished masks are
//! skipped), atomic writes; a failing image is reported and skipped, the exit code is 1 if any
//! image failed.

use super::common::{exit_code, for_each_image, read_split, report_failures};
use clap::ValueEnum;
use clip_es::cam_io::{CamFile, CamKind};
use clip_es::datasets::image_path;
use clip_es::masks::{
    encode_label_png, pseudo_mask, CrfImage, KernelCache, MaskError, MaskOptions,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of CAM files: <id>.npz (clip-es) or <id>.npy (the reference's dicts)
    #[arg(long)]
    cams: PathBuf,
    /// Directory of the images (<id>.jpg, or another usual extension)
    #[arg(long)]
    images: PathBuf,
    /// Split file: one image id per line (first token; COCO-style label columns are ignored)
    #[arg(long)]
    split: PathBuf,
    /// Output directory for the masks (<id>.png: 0 background, class index, 255 not confident)
    #[arg(long)]
    out: PathBuf,
    /// Pixels whose CRF marginal is below this become 255; 0 keeps all pixels
    #[arg(long, default_value = "0.95", value_parser = parse_threshold)]
    confidence: f32,
    /// Image given to the bilateral kernel: the reference's wrapped mean-subtracted BGR bytes,
    /// or the true RGB colours
    #[arg(long, value_enum, default_value_t = CrfImageArg::Reference)]
    crf_image: CrfImageArg,
    /// Skip the CRF: label = argmax of [1 - max CAM, CAMs], confidence = that score
    #[arg(long)]
    no_crf: bool,
    /// Write indexed PNGs with the VOC colour palette instead of grayscale
    #[arg(long)]
    palette: bool,
    /// Also write the confidence map (float32 <id>.npy, H x W) into this directory
    #[arg(long)]
    save_confidence: Option<PathBuf>,
    /// Which CAMs of the files to use
    #[arg(long, value_enum, default_value_t = CamKindArg::AttnHighres)]
    cam_key: CamKindArg,
    /// Recompute masks that already exist (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: all cores)
    #[arg(long, short)]
    jobs: Option<usize>,
    #[command(flatten)]
    exif: super::common::ExifArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CrfImageArg {
    Reference,
    Rgb,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CamKindArg {
    AttnHighres,
    Highres,
}

impl From<CamKindArg> for CamKind {
    fn from(k: CamKindArg) -> Self {
        match k {
            CamKindArg::AttnHighres => CamKind::AttnHighres,
            CamKindArg::Highres => CamKind::Highres,
        }
    }
}

/// A threshold given in decimal becomes the float32 nearest its float64 value, as numpy does
/// when comparing a float32 array with a Python float.
fn parse_threshold(s: &str) -> Result<f32, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not in [0, 1]"));
    }
    Ok(v as f32)
}

enum Outcome {
    Written,
    Skipped,
}

struct Job {
    cams: PathBuf,
    images: PathBuf,
    out: PathBuf,
    confidence_out: Option<PathBuf>,
    palette: bool,
    overwrite: bool,
    options: MaskOptions,
    kernels: KernelCache,
    exif: clip_es_image::ExifOrientation,
    on_orientation: Box<dyn Fn(&str, u16) + Sync>,
}

impl Job {
    fn process(&self, id: &str) -> Result<Outcome, MaskError> {
        let mask_path = self.out.join(format!("{id}.png"));
        let conf_path = self
            .confidence_out
            .as_ref()
            .map(|d| d.join(format!("{id}.npy")));
        if !self.overwrite && mask_path.is_file() && conf_path.as_ref().is_none_or(|p| p.is_file())
        {
            return Ok(Outcome::Skipped);
        }
        let cam_path = CamFile::locate(&self.cams, id)?;
        let image_file =
            image_path(&self.images, id).map_err(|m| MaskError::invalid(&self.images, m))?;
        let (image, orientation) = clip_es_image::load_rgb_with(&image_file, self.exif)?;
        (self.on_orientation)(id, orientation);
        // The image's size bounds what the CAM file may inflate to.
        let cam = CamFile::read_for_image(&cam_path, image.height as usize, image.width as usize)?;
        let mask = pseudo_mask(&cam, &cam_path, &image, &self.options, &self.kernels)?;
        let png = encode_label_png(&mask.labels, mask.width, mask.height, self.palette)
            .map_err(|e| MaskError::invalid(&mask_path, format!("PNG encoding: {e}")))?;
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
            let bytes = clip_es_pickle::encode_npy(&arr)
                .map_err(|e| MaskError::invalid(p, e.to_string()))?;
            clip_es::atomic::write_bytes_atomic(p, &bytes).map_err(|source| MaskError::Io {
                path: p.clone(),
                source,
            })?;
        }
        if let Err(source) = clip_es::atomic::write_bytes_atomic(&mask_path, &png) {
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
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let ids = read_split(&args.split)?;
    anyhow::ensure!(
        args.cams.is_dir(),
        "--cams {}: not a directory",
        args.cams.display()
    );
    anyhow::ensure!(
        args.images.is_dir(),
        "--images {}: not a directory",
        args.images.display()
    );
    clip_es::atomic::probe_dir(&args.out).map_err(anyhow::Error::msg)?;
    if let Some(d) = &args.save_confidence {
        clip_es::atomic::probe_dir(d).map_err(anyhow::Error::msg)?;
    }
    let job = Job {
        cams: args.cams,
        images: args.images,
        out: args.out,
        confidence_out: args.save_confidence,
        palette: args.palette,
        overwrite: args.overwrite,
        options: MaskOptions {
            confidence: args.confidence,
            crf_image: match args.crf_image {
                CrfImageArg::Reference => CrfImage::Reference,
                CrfImageArg::Rgb => CrfImage::Rgb,
            },
            use_crf: !args.no_crf,
            cam_kind: args.cam_key.into(),
            ..MaskOptions::default()
        },
        kernels: KernelCache::default(),
        exif: args.exif.mode(),
        on_orientation: {
            let warn = super::common::ExifWarning::new(args.exif.mode());
            Box::new(move |id, o| warn.note(id, o, &indicatif::ProgressBar::hidden()))
        },
    };
    let results: Vec<(String, Result<Outcome, MaskError>)> =
        for_each_image(&ids, args.jobs, "masks", |id| job.process(id))?;
    let written = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Outcome::Written)))
        .count();
    let skipped = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Outcome::Skipped)))
        .count();
    let failed: Vec<_> = results
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| (id, e)))
        .collect();
    eprintln!(
        "{} images: {written} masks written, {skipped} already present, {} failed",
        ids.len(),
        failed.len()
    );
    Ok(report_failures(&failed))
}
