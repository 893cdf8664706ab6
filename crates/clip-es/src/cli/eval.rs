//! `clip-es eval`: mIoU of CAMs (with the background-exponent sweep of `eval_cam.py`) or of
//! label masks against ground-truth PNGs ([`clip_es::eval::run`]). A failing image is reported
//! and left out; the exit code is then 1.

use super::cams::check_threads;
use super::common::{exit_code, report_failures, Bars};
use super::masks::CamKindArg;
use clap::ValueEnum;
use clip_es::eval::{EvalConfig, EvalReport, Prediction, UnlabelledPolicy};
use clip_es::ClassSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How predictions are scored: shared by `eval` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Background exponents t tried for CAMs (bg = (1 - max CAM)^t; t < 1: constant t);
    /// the first with the best mIoU is reported
    #[arg(long, value_delimiter = ',', default_values_t = clip_es::eval::DEFAULT_BG_POWERS)]
    pub bg_power: Vec<f64>,
    /// Masks: how predictions of 255 (not confident) count
    #[arg(long, value_enum, default_value_t = UnlabelledArg::Miss)]
    pub unlabelled: UnlabelledArg,
}

impl EvalArgs {
    pub fn config(
        &self,
        prediction: Prediction,
        gt: PathBuf,
        split: PathBuf,
        classes: ClassSet,
        cam_key: CamKindArg,
    ) -> anyhow::Result<EvalConfig> {
        anyhow::ensure!(
            !self.bg_power.is_empty(),
            "--bg-power needs at least one value"
        );
        anyhow::ensure!(
            self.bg_power.iter().all(|t| t.is_finite()),
            "--bg-power values must be finite"
        );
        Ok(EvalConfig {
            bg_powers: self.bg_power.clone(),
            cam_kind: cam_key.into(),
            unlabelled: match self.unlabelled {
                UnlabelledArg::Miss => UnlabelledPolicy::Miss,
                UnlabelledArg::Skip => UnlabelledPolicy::Skip,
            },
            ..EvalConfig::new(prediction, gt, split, classes)
        })
    }
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("prediction").required(true).args(["cams", "masks"])))]
pub struct Args {
    /// Directory of CAM files (<id>.npz, or the reference's <id>.npy)
    #[arg(long)]
    cams: Option<PathBuf>,
    /// Directory of label masks (<id>.png, palette or grayscale)
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Directory of ground-truth PNGs (<id>.png; palette or grayscale, 255 ignored)
    #[arg(long)]
    gt: PathBuf,
    /// Split file: one image id per line (first token; a deeplab-pytorch line
    /// `/JPEGImages/ID.jpg ...` gives the first path's file stem)
    #[arg(long)]
    split: PathBuf,
    /// Classes: voc (21), coco (81) or the class file given to `cams --dataset` (background
    /// becomes class 0)
    #[arg(long, default_value = "voc")]
    classes: String,
    #[command(flatten)]
    eval: EvalArgs,
    /// Which CAMs of the files to evaluate
    #[arg(long, value_enum, default_value_t = CamKindArg::AttnHighres)]
    cam_key: CamKindArg,
    /// Also write the results as JSON
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the per-class IoU as a bar chart PNG (classes with ground truth)
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(long, short = 'j', alias = "jobs")]
    threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UnlabelledArg {
    /// Count as a miss of the ground-truth class
    Miss,
    /// Leave the pixel out
    Skip,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let prediction = match (args.cams, args.masks) {
        (Some(c), _) => Prediction::Cams(c),
        (None, Some(m)) => Prediction::Masks(m),
        (None, None) => unreachable!("clap group"),
    };
    let mut config = args.eval.config(
        prediction,
        args.gt,
        args.split,
        ClassSet::from_spec(&args.classes)?,
        args.cam_key,
    )?;
    config.threads = check_threads(args.threads)?;
    execute(&config, args.json.as_deref(), args.plot.as_deref())
}

/// Runs the stage and prints the scores (and writes them to `json`, the chart to `plot`);
/// shared with `run`.
pub fn execute(
    config: &EvalConfig,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    for path in json.into_iter().chain(plot) {
        // Found now rather than after the evaluation.
        clip_es::atomic::probe_file_dir(path).map_err(anyhow::Error::msg)?;
    }
    let report = clip_es::eval::run(config, &Bars::default())?;
    print_report(&report);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.to_json())? + "\n";
        clip_es::atomic::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(path) = plot {
        let png = report
            .iou_chart_png()
            .map_err(|e| anyhow::anyhow!("{}: PNG encoding: {e}", path.display()))?;
        clip_es::atomic::write_bytes_atomic(path, &png)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        println!("IoU chart written to {}", path.display());
    }
    if !report.failures.is_empty() {
        eprintln!("(failed images are left out of the scores)");
    }
    Ok(report_failures(&report.failures))
}

pub fn print_report(r: &EvalReport) {
    println!(
        "{} images evaluated{}",
        r.evaluated(),
        if r.failures.is_empty() {
            String::new()
        } else {
            format!(", {} failed", r.failures.len())
        }
    );
    if r.cams {
        for (t, s) in r.bg_powers.iter().zip(&r.sweep) {
            println!("bg power {t}: mIoU {:.6}", s.mean_iou);
        }
        println!("best bg power: {}", r.bg_powers[r.best]);
    }
    let s = r.scores();
    println!(
        "{:>4}  {:<16} {:>8} {:>12} {:>12}",
        "id", "class", "IoU", "gt pixels", "predicted"
    );
    for (c, name) in r.label_names.iter().enumerate() {
        if s.gt_pixels[c] == 0 && s.pred_pixels[c] == 0 {
            continue;
        }
        let note = if s.gt_pixels[c] == 0 {
            "  (no ground truth: not in the mean)"
        } else {
            ""
        };
        println!(
            "{c:>4}  {name:<16} {:>8.4} {:>12} {:>12}{note}",
            s.class_iou[c], s.gt_pixels[c], s.pred_pixels[c]
        );
    }
    if !r.cams {
        let unl = r.confusion.total_unlabelled();
        let valid: u64 = r.confusion.counts.iter().sum::<u64>() + unl;
        println!(
            "predicted 255 (not confident): {unl} of {valid} pixels with ground truth ({:.2}%), counted as {}",
            100.0 * unl as f64 / valid.max(1) as f64,
            if r.unlabelled == UnlabelledPolicy::Miss { "misses" } else { "ignored" }
        );
    }
    println!("mIoU {:.6}", s.mean_iou);
    println!("pixel accuracy {:.6}", s.pixel_accuracy);
    println!("mean accuracy {:.6}", s.mean_accuracy);
    println!("frequency-weighted IoU {:.6}", s.frequency_weighted_iou);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EvalArgs,
    }

    /// Without options, the evaluation settings are the library's ([`EvalConfig::new`]).
    #[test]
    fn parsed_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["eval"]).unwrap();
        let p = PathBuf::new;
        let prediction = || Prediction::Masks(p());
        let config = cli
            .args
            .config(
                prediction(),
                p(),
                p(),
                ClassSet::voc(),
                CamKindArg::AttnHighres,
            )
            .unwrap();
        let library = EvalConfig::new(prediction(), p(), p(), ClassSet::voc());
        assert_eq!(format!("{config:?}"), format!("{library:?}"));
    }
}
