//! `clip-es masks`: CAMs + images -> CRF pseudo masks with confidence
//! ([`clip_es::masks::run`]). Parallel over images, resumable (finished masks are skipped),
//! atomic writes; a failing image is reported and skipped, the exit code is 1 if any failed.

use super::cams::check_threads;
use super::common::{exit_code, report_failures, Bars};
use clap::ValueEnum;
use clip_es::cam_files::CamKind;
use clip_es::masks::{CrfImage, MaskOptions, MasksConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// How masks are made: shared by `masks` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaskArgs {
    /// Pixels whose CRF marginal is below this become 255; 0 keeps all pixels
    #[arg(long, default_value_t = MaskOptions::default().confidence, value_parser = parse_threshold)]
    pub confidence: f32,
    /// Image given to the bilateral kernel: the reference's wrapped mean-subtracted BGR bytes,
    /// or the true RGB colours
    #[arg(long, value_enum, default_value_t = CrfImageArg::Reference)]
    pub crf_image: CrfImageArg,
    /// Skip the CRF: label = argmax of [1 - max CAM, CAMs], confidence = that score
    #[arg(long)]
    pub no_crf: bool,
    /// Write indexed PNGs with the VOC colour palette instead of grayscale
    #[arg(long)]
    pub palette: bool,
    /// Also write the confidence map (float32 <id>.npy, H x W) into this directory
    #[arg(long)]
    pub save_confidence: Option<PathBuf>,
}

impl MaskArgs {
    /// The stage's settings for these options.
    pub fn config(
        &self,
        cams: PathBuf,
        images: PathBuf,
        split: PathBuf,
        out: PathBuf,
        cam_key: CamKindArg,
    ) -> MasksConfig {
        MasksConfig {
            options: MaskOptions {
                confidence: self.confidence,
                crf_image: match self.crf_image {
                    CrfImageArg::Reference => CrfImage::Reference,
                    CrfImageArg::Rgb => CrfImage::Rgb,
                },
                use_crf: !self.no_crf,
                cam_kind: cam_key.into(),
                ..MaskOptions::default()
            },
            palette: self.palette,
            save_confidence: self.save_confidence.clone(),
            ..MasksConfig::new(cams, images, split, out)
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of CAM files: <id>.npz (clip-es) or <id>.npy (the reference's dicts)
    #[arg(long)]
    cams: PathBuf,
    /// Directory of the images (<id>.jpg, or another usual extension)
    #[arg(long)]
    images: PathBuf,
    /// Split file: one image id per line (first token; COCO-style label columns are ignored; a
    /// deeplab-pytorch line `/JPEGImages/ID.jpg ...` gives the first path's file stem)
    #[arg(long)]
    split: PathBuf,
    /// Output directory for the masks (<id>.png: 0 background, class index, 255 not confident)
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    mask: MaskArgs,
    /// Which CAMs of the files to use
    #[arg(long, value_enum, default_value_t = CamKindArg::AttnHighres)]
    cam_key: CamKindArg,
    /// Recompute masks that already exist (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
    /// Also write an overlay PNG per image into this directory (photo, coloured mask with
    /// outlines, legend)
    #[arg(long)]
    overlays: Option<PathBuf>,
    #[command(flatten)]
    exif: super::common::ExifArgs,
    /// Classes of the run (voc, coco or the class file given to `cams --dataset`): CAM keys
    /// beyond them fail the image, and the overlays' legends name them. Without it only the
    /// 8-bit label limit is checked and legends use the VOC names
    #[arg(long)]
    classes: Option<String>,
    /// Memory the stage may use for the images in flight together, in MB (default: what the
    /// system reports available); an image whose CRF alone needs more fails with a message,
    /// and threads wait for room rather than exceed it
    #[arg(long)]
    memory_limit: Option<u64>,
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
pub(crate) fn parse_threshold(s: &str) -> Result<f32, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not in [0, 1]"));
    }
    Ok(v as f32)
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args
        .mask
        .config(args.cams, args.images, args.split, args.out, args.cam_key);
    config.overwrite = args.overwrite;
    config.threads = check_threads(args.threads)?;
    config.exif = args.exif.mode();
    config.memory_limit = args.memory_limit.map(|mb| mb.saturating_mul(1_000_000));
    let classes = match &args.classes {
        Some(spec) => Some(clip_es::ClassSet::from_spec(spec)?),
        None => None,
    };
    if let Some(c) = &classes {
        config.options.num_classes = Some(c.len());
    }
    if let Some(d) = args.overlays {
        let legend = match classes {
            Some(c) => c,
            None => clip_es::ClassSet::from_spec("voc")?,
        };
        config.overlays = Some((d, legend));
    }
    execute(&config)
}

/// Runs the stage and prints its outcome; shared with `run`.
pub fn execute(config: &MasksConfig) -> anyhow::Result<ExitCode> {
    let r = clip_es::masks::run(config, &Bars::default())?;
    eprintln!(
        "{} images: {} masks written, {} already present, {} failed",
        r.images,
        r.written,
        r.skipped,
        r.failures.len()
    );
    Ok(report_failures(&r.failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MaskArgs,
    }

    /// Without options, the mask settings are the library's ([`MaskOptions::default`]).
    #[test]
    fn parsed_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["masks"]).unwrap();
        let p = PathBuf::new;
        let config = cli.args.config(p(), p(), p(), p(), CamKindArg::AttnHighres);
        assert_eq!(
            format!("{:?}", config.options),
            format!("{:?}", MaskOptions::default())
        );
    }
}
