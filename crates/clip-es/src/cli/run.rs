//! `clip-es run`: the whole CLIP-ES pipeline in one command: the CAM stage into `<out>/cams`,
//! the masks stage into `<out>/masks`, then (with `--gt`) the evaluation of the CAMs and of the
//! masks. With `--train ARCH`, stage three follows: the network trained on the pseudo masks
//! into `<out>/train`, its predictions for the split (or `--predict-split`) into
//! `<out>/predictions`, and with `--gt` their evaluation. Each stage gets its configuration
//! directly (every option of the CAM and mask stages is accepted here) and runs the same library
//! entry point as its own subcommand, so it is resumable the same way.

use super::cams::{check_threads, CamArgs, DatasetArgs};
use super::eval::EvalArgs;
use super::masks::{CamKindArg, MaskArgs};
use super::train::ArchArg;
use clip_es::cams::CamsConfig;
use clip_es::eval::Prediction;
use clip_es::masks::CrfParams;
use clip_es::predict::PredictConfig;
use clip_es_train::train::{Start, TrainConfig};
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
    #[arg(long, default_value_t = 5)]
    train_batch: usize,
    /// Initial weights of the network (deeplab-pytorch's init .pth, a torchvision ResNet-101,
    /// or a safetensors file)
    #[arg(long)]
    train_init: Option<PathBuf>,
    /// Checkpoint every N iterations
    #[arg(long, default_value_t = 1000)]
    train_save_every: usize,
    /// Images to predict with the trained network [default: the split]
    #[arg(long)]
    predict_split: Option<PathBuf>,
    /// Refine the predictions with the dense CRF
    #[arg(long)]
    predict_crf: bool,
    /// Compute device of stage three: flex (CPU), or vulkan in builds with the `vulkan` feature (docs/gpu.md)
    #[arg(long, default_value = "flex")]
    device: String,
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
        exif: args.cam.exif.mode(),
    };
    let mut masks = args.mask.config(
        cams_dir.clone(),
        args.data.images.clone(),
        split.clone(),
        masks_dir.clone(),
        args.cam_key,
    );
    masks.overwrite = args.overwrite;
    // One pixel grid in both stages.
    masks.exif = args.cam.exif.mode();
    masks.options.num_classes = Some(classes.len());
    masks.threads = threads;
    masks.memory_limit = args.cam.memory_limit.map(|mb| mb.saturating_mul(1_000_000));
    if args.overlays {
        masks.overlays = Some((args.out.join("overlays"), classes.clone()));
    }
    let mut evals = Vec::new();
    if let Some(gt) = &args.gt {
        for prediction in [
            Prediction::Cams(cams_dir),
            Prediction::Masks(masks_dir.clone()),
        ] {
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

    // Stage three's settings are known now; its split file is written once the masks exist.
    let train_dir = args.out.join("train");
    let predictions = args.out.join("predictions");
    let stage3 = args.stage3.train.map(|arch| {
        let t = &args.stage3;
        let mut tc = TrainConfig::new(
            arch.arch(),
            args.data.images.clone(),
            masks_dir.clone(),
            train_dir.join("split.txt"),
            train_dir.clone(),
        );
        tc.num_classes = classes.len() + 1;
        // A rerun continues the training in <out>/train if it was made with these settings.
        tc.start = Start::Rerun {
            init: t.train_init.clone(),
        };
        tc.overwrite = args.overwrite;
        if let Some(i) = t.train_iters {
            tc.options.iters = i;
        }
        if let Some(lr) = t.train_lr {
            tc.options.lr = lr;
        }
        tc.options.batch = t.train_batch;
        tc.options.save_every = t.train_save_every;
        tc.clip_model = args.cam.model.clone();
        tc.feature_budget = clip_es_train::features::FeatureBudget {
            max_side: args.cam.max_side,
            memory_limit: args.cam.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
        };
        tc.device = t.device.clone();
        tc.threads = threads;
        let predict_split = t.predict_split.clone().unwrap_or_else(|| split.clone());
        let mut pc = PredictConfig::new(
            tc.out.join("final.safetensors"),
            args.data.images.clone(),
            predict_split,
            predictions.clone(),
        );
        pc.crf = t.predict_crf.then(CrfParams::default);
        pc.max_side = args.cam.max_side;
        pc.memory_limit = args.cam.memory_limit.map(|mb| mb.saturating_mul(1_000_000));
        pc.device = t.device.clone();
        pc.threads = threads;
        pc.exif = args.cam.exif.mode();
        pc.overwrite = args.overwrite;
        if args.overlays {
            pc.overlays = Some((args.out.join("prediction-overlays"), classes.clone()));
        }
        (arch, tc, pc)
    });
    if let Some((_, tc, _)) = &stage3 {
        tc.validate().map_err(|e| {
            anyhow::anyhow!(
                "the training stage (--train-* options, the rest as `clip-es train`): {e}"
            )
        })?;
        eprintln!("device: {}", clip_es_train::check_device(&tc.device)?);
    }
    // Outputs that an earlier run made with other settings are found before any work, every
    // stage's at once (each stage checks its own again when it starts).
    let mut mismatches = Vec::new();
    if !args.overwrite {
        let cams_check = clip_es::cams::manifest(&cams).and_then(|m| {
            let has = clip_es_data::manifest::holds_files(&cams.out, &["npz", "npy"]);
            m.check(&cams.out, false, has, &[])
        });
        let masks_check = clip_es::masks::manifest(&masks).check(
            &masks.out,
            false,
            clip_es_data::manifest::holds_files(&masks.out, &["png"]),
            &[],
        );
        mismatches.extend(cams_check.err());
        mismatches.extend(masks_check.err());
        if let Some((_, tc, pc)) = &stage3 {
            mismatches.extend(
                clip_es_train::train::check_rerun(tc)
                    .err()
                    .map(|e| e.to_string()),
            );
            // The checkpoint may still change (more iterations): new weights make new
            // predictions, so only the other settings are compared here.
            if pc.checkpoint.is_file() {
                let has = clip_es_data::manifest::holds_files(&pc.out, &["png"]);
                let predict_check = clip_es::predict::manifest(pc)
                    .and_then(|m| m.check(&pc.out, false, has, &["checkpoint"]));
                mismatches.extend(predict_check.err());
            }
        }
    }
    anyhow::ensure!(mismatches.is_empty(), "{}", mismatches.join("; "));

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
        stage(what, super::eval::execute(e, None, None))?;
    }
    if let Some((arch, tc, mut pc)) = stage3 {
        // Only the images whose pseudo masks exist are trained on (a failed image has none).
        let ids = clip_es::datasets::read_split(&split)?;
        let with_mask: Vec<&String> = ids
            .iter()
            .filter(|id| masks_dir.join(format!("{id}.png")).is_file())
            .collect();
        anyhow::ensure!(
            !with_mask.is_empty(),
            "no pseudo masks to train on in {}",
            masks_dir.display()
        );
        if with_mask.len() < ids.len() {
            eprintln!(
                "training on the {} of {} images that have a pseudo mask",
                with_mask.len(),
                ids.len()
            );
        }
        std::fs::create_dir_all(&train_dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", train_dir.display()))?;
        let text: String = with_mask.iter().map(|id| format!("{id}\n")).collect();
        clip_es::atomic::write_bytes_atomic(&tc.split, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", tc.split.display()))?;
        eprintln!("== training ({})", arch.arch().name());
        let trained = super::train::execute(&tc)
            .map_err(|e| e.context("the training stage could not run"))?;
        // New weights make earlier predictions stale.
        pc.overwrite = args.overwrite || trained.iters > trained.start;
        eprintln!("== predictions");
        stage("predictions", super::predict::execute(&pc))?;
        if let Some(gt) = &args.gt {
            let mut e = args.eval.config(
                Prediction::Masks(predictions),
                gt.clone(),
                pc.split.clone(),
                classes.clone(),
                args.cam_key,
            )?;
            e.threads = threads;
            eprintln!("== evaluation of the predictions");
            stage(
                "evaluation of the predictions",
                super::eval::execute(&e, None, None),
            )?;
        }
    }
    Ok(worst)
}
