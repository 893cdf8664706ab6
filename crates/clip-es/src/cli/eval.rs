//! `clip-es eval`: mIoU of CAMs (with the background-exponent sweep of `eval_cam.py`) or of
//! label masks (pseudo masks, `eval_cam.py --cam_type png`) against ground-truth PNGs (spec
//! section 6). A failing image is reported and left out; the exit code is then 1.

use super::common::{exit_code, for_each_image, read_split, report_failures};
use super::masks::CamKindArg;
use clap::ValueEnum;
use clip_es::cam_io::{CamFile, CamKind};
use clip_es::classes::ClassList;
use clip_es::eval::{cam_predictions, ConfusionMatrix, EvalError, Scores, UnlabelledPolicy};
use clip_es::masks::read_label_png;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Split file: one image id per line (first token)
    #[arg(long)]
    split: PathBuf,
    /// Classes: voc (21), coco (81) or the class file given to `cams --dataset` (background
    /// becomes class 0)
    #[arg(long, default_value = "voc")]
    classes: String,
    /// Background exponents t tried for CAMs (bg = (1 - max CAM)^t; t < 1: constant t);
    /// the first with the best mIoU is reported
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    bg_power: Vec<f64>,
    /// Which CAMs of the files to evaluate
    #[arg(long, value_enum, default_value_t = CamKindArg::AttnHighres)]
    cam_key: CamKindArg,
    /// Masks: how predictions of 255 (not confident) count
    #[arg(long, value_enum, default_value_t = UnlabelledArg::Miss)]
    unlabelled: UnlabelledArg,
    /// Also write the results as JSON
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(long, short)]
    jobs: Option<usize>,
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

/// What one image contributes: one confusion matrix per background exponent (one for masks).
type ImageResult = Result<Vec<ConfusionMatrix>, String>;

fn evaluate_image(id: &str, args: &Args, classes: &ClassList, kind: CamKind) -> ImageResult {
    let n = classes.len();
    let gt_path = args.gt.join(format!("{id}.png"));
    let gt = read_label_png(&gt_path).map_err(|e| e.to_string())?;
    let (preds, pred_path, pw, ph) = if let Some(dir) = &args.cams {
        let path = CamFile::locate(dir, id).map_err(|e| e.to_string())?;
        let cam = CamFile::read_for_image(&path, gt.height, gt.width).map_err(|e| e.to_string())?;
        let p = cam_predictions(&cam, kind, &args.bg_power, n)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        (p, path, cam.width, cam.height)
    } else {
        let path = args
            .masks
            .as_ref()
            .expect("clap group")
            .join(format!("{id}.png"));
        let m = read_label_png(&path).map_err(|e| e.to_string())?;
        (vec![m.labels], path, m.width, m.height)
    };
    if (pw, ph) != (gt.width, gt.height) {
        let e = EvalError::SizeMismatch {
            pw,
            ph,
            gw: gt.width,
            gh: gt.height,
        };
        return Err(format!(
            "{}: {e} ({})",
            pred_path.display(),
            gt_path.display()
        ));
    }
    preds
        .iter()
        .map(|p| {
            let mut m = ConfusionMatrix::new(n);
            m.add(&gt.labels, p, gt.width)
                .map_err(|e| format!("{}: {e}", pred_path.display()))?;
            Ok(m)
        })
        .collect()
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let ids = read_split(&args.split)?;
    let classes = ClassList::parse(&args.classes)?;
    let kind: CamKind = args.cam_key.into();
    let policy = match args.unlabelled {
        UnlabelledArg::Miss => UnlabelledPolicy::Miss,
        UnlabelledArg::Skip => UnlabelledPolicy::Skip,
    };
    let is_cams = args.cams.is_some();
    let powers: Vec<f64> = if is_cams {
        args.bg_power.clone()
    } else {
        vec![f64::NAN]
    };
    anyhow::ensure!(!powers.is_empty(), "--bg-power needs at least one value");
    anyhow::ensure!(
        !is_cams || powers.iter().all(|t| t.is_finite()),
        "--bg-power values must be finite"
    );
    for (flag, dir) in [
        ("--gt", Some(&args.gt)),
        ("--cams", args.cams.as_ref()),
        ("--masks", args.masks.as_ref()),
    ] {
        if let Some(d) = dir {
            anyhow::ensure!(d.is_dir(), "{flag} {}: not a directory", d.display());
        }
    }
    if let Some(j) = &args.json {
        clip_es::atomic::probe_file_dir(j).map_err(anyhow::Error::msg)?;
    }
    let results: Vec<(String, ImageResult)> = for_each_image(&ids, args.jobs, "eval", |id| {
        evaluate_image(id, &args, &classes, kind)
    })?;

    let mut totals = vec![ConfusionMatrix::new(classes.len()); powers.len()];
    let mut failed = Vec::new();
    for (id, r) in &results {
        match r {
            Ok(ms) => totals.iter_mut().zip(ms).for_each(|(t, m)| t.merge(m)),
            Err(e) => failed.push((id.clone(), e.clone())),
        }
    }
    let evaluated = ids.len() - failed.len();
    println!(
        "{} images evaluated{}",
        evaluated,
        if failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", failed.len())
        }
    );
    let scores: Vec<Scores> = totals.iter().map(|m| m.scores(policy)).collect();
    // The first exponent with the best mIoU (NaN never wins).
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if s.mean_iou > scores[best].mean_iou || scores[best].mean_iou.is_nan() {
            best = i;
        }
    }
    if is_cams {
        for (t, s) in powers.iter().zip(&scores) {
            println!("bg power {t}: mIoU {:.6}", s.mean_iou);
        }
        println!("best bg power: {}", powers[best]);
    }
    let s = &scores[best];
    println!(
        "{:>4}  {:<16} {:>8} {:>12} {:>12}",
        "id", "class", "IoU", "gt pixels", "predicted"
    );
    for (c, name) in classes.names.iter().enumerate() {
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
    if !is_cams {
        let unl = totals[best].total_unlabelled();
        let valid: u64 = totals[best].counts.iter().sum::<u64>() + unl;
        println!(
            "predicted 255 (not confident): {unl} of {valid} pixels with ground truth ({:.2}%), counted as {}",
            100.0 * unl as f64 / valid.max(1) as f64,
            if policy == UnlabelledPolicy::Miss { "misses" } else { "ignored" }
        );
    }
    println!("mIoU {:.6}", s.mean_iou);
    println!("pixel accuracy {:.6}", s.pixel_accuracy);
    println!("mean accuracy {:.6}", s.mean_accuracy);
    println!("frequency-weighted IoU {:.6}", s.frequency_weighted_iou);

    if let Some(path) = &args.json {
        let num = |v: f64| {
            if v.is_finite() {
                json!(v)
            } else {
                serde_json::Value::Null
            }
        };
        let doc = json!({
            "source": if is_cams { "cams" } else { "masks" },
            "images": ids.len(),
            "evaluated": evaluated,
            "failed": failed.iter().map(|(id, e)| json!({"id": id, "error": e})).collect::<Vec<_>>(),
            "sweep": if is_cams {
                powers.iter().zip(&scores).map(|(t, s)| json!({"bg_power": t, "mean_iou": num(s.mean_iou)})).collect::<Vec<_>>()
            } else { vec![] },
            "bg_power": if is_cams { json!(powers[best]) } else { serde_json::Value::Null },
            "mean_iou": num(s.mean_iou),
            "pixel_accuracy": num(s.pixel_accuracy),
            "mean_accuracy": num(s.mean_accuracy),
            "frequency_weighted_iou": num(s.frequency_weighted_iou),
            "unlabelled_pixels": totals[best].total_unlabelled(),
            "classes": classes.names.iter().enumerate().map(|(c, name)| json!({
                "index": c, "name": name, "iou": num(s.class_iou[c]),
                "gt_pixels": s.gt_pixels[c], "pred_pixels": s.pred_pixels[c],
            })).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
    }
    if !failed.is_empty() {
        eprintln!("(failed images are left out of the scores)");
    }
    Ok(report_failures(&failed))
}

fn write_json(path: &Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)? + "\n";
    clip_es::atomic::write_bytes_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
