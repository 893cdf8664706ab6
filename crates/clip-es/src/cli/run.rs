//! `clip-es run`: the whole CLIP-ES pipeline in one command: the CAM stage into `<out>/cams`,
//! the masks stage into `<out>/masks`, then (with `--gt`) the evaluation of the CAMs and of the
//! masks. With `--train ARCH`, stage three follows: the network trained on the pseudo masks
//! into `<out>/train`, its predictions for the split (or `--predict-split`) into
//! `<out>/predictions`, and with `--gt` their evaluation. Each stage gets its configuration
//! directly (every option of the CAM and mask stages is accepted here) and runs the same library
//! entry point as its own subcommand, so it is resumable the same way. The work is
//! [`clip_es::pipeline::run`]'s; this file maps the options to its config and prints the
//! stages' summaries.

use super::cams::{check_threads, CamArgs, DatasetArgs};
use super::common::{report_failures, Bars};
use super::eval::EvalArgs;
use super::masks::{CamKindArg, MaskArgs};
use super::train::ArchArg;
use clip_es::cams::CamSettings;
use clip_es::eval::Prediction;
use clip_es::pipeline::{NamedEval, PipelineConfig, PipelineReport, Stage3Config};
use clip_es_train::train::TrainOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DatasetArgs,
    #[command(flatten)]
    cam: CamArgs,
    #[command(flatten)]
    mask: MaskArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// Which CAMs the masks and the CAM evaluation use
    #[arg(long, value_enum, default_value_t = CamKindArg::AttnHighres)]
    cam_key: CamKindArg,
    /// Ground-truth masks (<id>.png): evaluate the CAMs and the masks against them
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Output directory: cams/ and masks/ are made inside
    #[arg(long)]
    out: PathBuf,
    /// Recompute outputs that exist (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    /// Write the CAM stage's JSON report (per-image seconds, failures) to this file
    #[arg(long)]
    report: Option<PathBuf>,
    /// Threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
    /// Also write overlay PNGs of the masks into <out>/overlays (and of the predictions into
    /// <out>/prediction-overlays)
    #[arg(long)]
    overlays: bool,
    #[command(flatten)]
    stage3: TrainStageArgs,
}

/// Stage three inside `run` (the full set of settings is `clip-es train`'s).
#[derive(clap::Args, Debug)]
pub struct TrainStageArgs {
    /// Add stage three: train this network on the pseudo masks (into <out>/train; a rerun
    /// resumes from its latest checkpoint), then predict the images (into <out>/predictions)
    #[arg(long, value_enum)]
    train: Option<ArchArg>,
    /// Training iterations [default: 20000, deeplab-pytorch's]
    #[arg(long)]
    train_iters: Option<usize>,
    /// Base learning rate [default: 2.5e-4 for deeplab-v2, 0.01 for clip-decoder]
    #[arg(long)]
    train_lr: Option<f64>,
    /// Images per sub-batch (two sub-batches per iteration)
    #[arg(long, default_value_t = TrainOptions::default().batch)]
    train_batch: usize,
    /// Initial weights of the network (deeplab-pytorch's init .pth, a torchvision ResNet-101,
    /// or a safetensors file)
    #[arg(long)]
    train_init: Option<PathBuf>,
    /// Checkpoint every N iterations
    #[arg(long, default_value_t = TrainOptions::default().save_every)]
    train_save_every: usize,
    /// Images to predict with the trained network [default: the split]
    #[arg(long)]
    predict_split: Option<PathBuf>,
    /// Refine the predictions with the dense CRF
    #[arg(long)]
    predict_crf: bool,
    /// Compute device: cpu (the CAMs on clip-es' CPU kernels, stage three on burn's flex), flex
    /// (burn's CPU backend for both), or vulkan (a Vulkan GPU for both; builds with the `vulkan`
    /// feature, docs/gpu.md). CAA, the CRF and the PNGs stay on the CPU
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> ExitCode {
    super::common::exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let cams_device = clip_es::cams::open_device(config.settings.device)?;
    eprintln!("device: {cams_device}");
    if let Some(stage3) = &config.stage3 {
        let train_device = clip_es_train::check_device(&stage3.device)?;
        if train_device != cams_device {
            eprintln!("device of stage three: {train_device}");
        }
    }
    let report = clip_es::pipeline::run(&config, &Bars::default())?;
    print_report(&report)
}

/// The pipeline's configuration for these options.
fn config(args: &Args) -> anyhow::Result<PipelineConfig> {
    let classes = args.cam.classes(&args.data)?;
    let paths = PathBuf::new;
    let mask = args
        .mask
        .config(paths(), paths(), paths(), paths(), args.cam_key);
    let eval = args.eval.config(
        Prediction::Masks(paths()),
        paths(),
        paths(),
        classes.clone(),
        args.cam_key,
    )?;
    let t = &args.stage3;
    Ok(PipelineConfig {
        data: args.data.config(),
        model: args.cam.model.clone(),
        settings: CamSettings {
            device: clip_es::cams::parse_device(&t.device).map_err(anyhow::Error::msg)?,
            ..args.cam.settings()?
        },
        exif: args.cam.exif.mode(),
        mask: mask.options,
        palette: mask.palette,
        save_confidence: mask.save_confidence,
        gt: args.gt.clone(),
        bg_powers: eval.bg_powers,
        unlabelled: eval.unlabelled,
        out: args.out.clone(),
        overwrite: args.overwrite,
        report: args.report.clone(),
        threads: check_threads(args.threads)?,
        overlays: args.overlays,
        stage3: t.train.map(|arch| Stage3Config {
            iters: t.train_iters,
            lr: t.train_lr,
            batch: t.train_batch,
            init: t.train_init.clone(),
            save_every: t.train_save_every,
            predict_split: t.predict_split.clone(),
            predict_crf: t.predict_crf,
            // `cpu` names the CAMs' CPU kernels; stage three's CPU device is its default, flex.
            device: match t.device.as_str() {
                "cpu" => clip_es::pipeline::default_device(),
                other => other.to_string(),
            },
            ..Stage3Config::new(arch.arch())
        }),
        ..PipelineConfig::new(args.data.config(), classes, args.out.clone())
    })
}

/// Each stage's summary and failed images, in the order the stages ran; exit code 1 if any
/// image failed in any stage.
fn print_report(r: &PipelineReport) -> anyhow::Result<ExitCode> {
    eprintln!("CAMs: {} written", r.cams.written.len());
    report_failures(&r.cams.failures);
    eprintln!(
        "pseudo masks: {} images: {} masks written, {} already present, {} failed",
        r.masks.images,
        r.masks.written,
        r.masks.skipped,
        r.masks.failures.len()
    );
    report_failures(&r.masks.failures);
    // The evaluations of the CAMs and masks come before stage three, the predictions' after.
    let (before, after) = r.evals.split_at(r.evals.len().min(2));
    print_evals(before);
    if let Some(t) = &r.train {
        super::train::print_report(t);
    }
    if let Some(p) = &r.predict {
        eprintln!(
            "predictions: {} images: {} label maps written, {} already present, {} failed",
            p.images,
            p.written,
            p.skipped,
            p.failures.len()
        );
        report_failures(&p.failures);
    }
    print_evals(after);
    Ok(if r.any_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_evals(evals: &[NamedEval]) {
    for e in evals {
        super::eval::print_report(&e.report);
        report_failures(&e.report.failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Without options, the command's configuration is the library's
    /// ([`PipelineConfig::new`], [`Stage3Config::new`]).
    #[test]
    fn parsed_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from([
            "run",
            "--images",
            "i",
            "--labels",
            "l",
            "--out",
            "o",
            "--train",
            "clip-decoder",
        ])
        .unwrap();
        let parsed = config(&cli.args).unwrap();
        let data = clip_es::cams::DatasetConfig {
            images: "i".into(),
            annotations: None,
            labels: Some("l".into()),
            split: None,
        };
        let library = PipelineConfig {
            stage3: Some(Stage3Config::new(clip_es_train::Arch::ClipDecoder)),
            ..PipelineConfig::new(data, clip_es::ClassSet::voc(), "o".into())
        };
        assert_eq!(format!("{parsed:?}"), format!("{library:?}"));
    }
}
