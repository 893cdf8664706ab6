//! `clip-es run`: the whole CLIP-ES pipeline in one command: the CAM stage into `<out>/cams`,
//! the masks stage into `<out>/masks`, then (with `--gt`) the evaluation of the CAMs and of the
//! masks. Each stage gets its configuration directly (every option of the stages is accepted
//! here) and runs the same library entry point as its own subcommand, so it is resumable the
//! same way.

use super::cams::{check_threads, CamArgs, DatasetArgs};
use super::eval::EvalArgs;
use super::masks::{CamKindArg, MaskArgs};
use clip_es::cams::CamsConfig;
use clip_es::eval::Prediction;
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
}

pub fn run(args: Args) -> ExitCode {
    super::common::exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let split = args
        .data
        .config()
        .id_file()
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow::anyhow!("give --split and/or --labels to say which images to process")
        })?;
    let threads = check_threads(args.threads)?;
    let cams_dir = args.out.join("cams");
    let masks_dir = args.out.join("masks");
    let classes = args.cam.classes(&args.data)?;
    let cams = CamsConfig {
        data: args.data.config(),
        classes: classes.clone(),
        model: args.cam.model.clone(),
        settings: args.cam.settings()?,
        out: cams_dir.clone(),
        shard: None,
        overwrite: args.overwrite,
        report: args.report.clone(),
        threads,
    };
    let mut masks = args.mask.config(
        cams_dir.clone(),
        args.data.images.clone(),
        split.clone(),
        masks_dir.clone(),
        args.cam_key,
    );
    masks.overwrite = args.overwrite;
    masks.threads = threads;
    let mut evals = Vec::new();
    if let Some(gt) = &args.gt {
        for prediction in [Prediction::Cams(cams_dir), Prediction::Masks(masks_dir)] {
            let mut e = args.eval.config(
                prediction,
                gt.clone(),
                split.clone(),
                classes.clone(),
                args.cam_key,
            )?;
            e.threads = threads;
            evals.push(e);
        }
    }

    let mut worst = ExitCode::SUCCESS;
    // A stage with failed images (exit 1) still lets the next stages run on the rest; one that
    // cannot run at all stops the pipeline.
    let mut stage = |what: &str, result: anyhow::Result<ExitCode>| -> anyhow::Result<()> {
        let code = result.map_err(|e| e.context(format!("the {what} stage could not run")))?;
        if code != ExitCode::SUCCESS {
            worst = code;
        }
        Ok(())
    };
    eprintln!("== CAMs");
    stage("CAMs", super::cams::execute(&cams))?;
    eprintln!("== pseudo masks");
    stage("pseudo masks", super::masks::execute(&masks))?;
    for e in &evals {
        let what = match e.prediction {
            Prediction::Cams(_) => "evaluation of the CAMs",
            Prediction::Masks(_) => "evaluation of the masks",
        };
        eprintln!("== {what}");
        stage(what, super::eval::execute(e, None))?;
    }
    Ok(worst)
}
