//! Evaluation of CAMs and masks against ground truth (docs/algorithm.md, "Evaluation";
//! reference `eval_cam.py`, whose `scores` also serves `eval_cam_with_crf.py`).
//!
//! - CAM prediction: argmax over `[bg, cam_1..cam_K]` in float16, ties to the first (so to the
//!   background), with `bg = (1 - max_k cam_k) ** t` evaluated in float16 for t >= 1, or the
//!   constant t for t < 1 (the reference's `np.pad(..., constant_values=t)`); class = key + 1.
//! - Confusion matrix over the classes; ground-truth values outside 0..C (255 boundaries) are
//!   ignored.
//! - IoU_c = TP / (TP + FP + FN); mIoU = mean over the classes that have ground-truth pixels
//!   (numpy's `nanmean(iu[hist.sum(axis=1) > 0])`, summed in numpy's pairwise order), pixel
//!   accuracy, mean class accuracy and frequency-weighted IoU as the reference prints them.
//! - The background exponent is swept (the reference tries 1 and 2 for refined CAMs) and the
//!   first exponent with the best mIoU kept.

use crate::argmax::first_max;
use crate::cam_files::{CamFile, CamKind};
use crate::classes::{ClassSet, BACKGROUND_LABEL, IGNORE_LABEL};
use crate::masks::read_label_png;
use crate::progress::{for_each_image, Progress};
use std::path::PathBuf;

/// Pixels counted per (ground truth, prediction) pair, plus predictions of 255 ("not confident"
/// in pseudo masks) per ground-truth class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    pub n_classes: usize,
    /// `counts[gt * n_classes + pred]`.
    pub counts: Vec<u64>,
    /// Pixels of each ground-truth class predicted as 255.
    pub unlabelled: Vec<u64>,
}

/// What to do with predictions of 255 (the ignored pixels of pseudo masks). The reference never
/// evaluates such masks (its own evaluation runs before the threshold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnlabelledPolicy {
    /// Count them as misses of their ground-truth class (lowers recall, never inflates IoU).
    #[default]
    Miss,
    /// Leave those pixels out, as if their ground truth were ignored.
    Skip,
}

/// Scores computed from a confusion matrix, as the reference's `scores()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub pixel_accuracy: f64,
    pub mean_accuracy: f64,
    pub frequency_weighted_iou: f64,
    pub mean_iou: f64,
    /// IoU per class; NaN where the class has neither ground truth nor predictions.
    pub class_iou: Vec<f64>,
    /// Ground-truth pixels per class (classes with none are left out of the mean).
    pub gt_pixels: Vec<u64>,
    /// Predicted pixels per class (on pixels with valid ground truth).
    pub pred_pixels: Vec<u64>,
}

/// A prediction or ground truth that does not fit the evaluation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("prediction is {pw}x{ph} but the ground truth {gw}x{gh}")]
    SizeMismatch {
        pw: usize,
        ph: usize,
        gw: usize,
        gh: usize,
    },
    #[error(
        "predicted value {value} at pixel ({x}, {y}) is not a class of the {n} classes (nor 255)"
    )]
    BadPrediction {
        value: u8,
        x: usize,
        y: usize,
        n: usize,
    },
    #[error("{0}")]
    Cam(String),
}

impl ConfusionMatrix {
    pub fn new(n_classes: usize) -> Self {
        ConfusionMatrix {
            n_classes,
            counts: vec![0; n_classes * n_classes],
            unlabelled: vec![0; n_classes],
        }
    }

    /// Adds one image. `width` is used to name pixels in errors.
    pub fn add(&mut self, gt: &[u8], pred: &[u8], width: usize) -> Result<(), EvalError> {
        let n = self.n_classes;
        assert_eq!(gt.len(), pred.len());
        for (i, (&g, &p)) in gt.iter().zip(pred).enumerate() {
            let (g, pu) = (g as usize, p as usize);
            if g >= n {
                continue;
            }
            if pu < n {
                self.counts[g * n + pu] += 1;
            } else if p == IGNORE_LABEL {
                self.unlabelled[g] += 1;
            } else {
                return Err(EvalError::BadPrediction {
                    value: p,
                    x: i % width.max(1),
                    y: i / width.max(1),
                    n,
                });
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &ConfusionMatrix) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.unlabelled.iter_mut().zip(&other.unlabelled) {
            *a += b;
        }
    }

    /// Pixels with valid ground truth predicted as 255.
    pub fn total_unlabelled(&self) -> u64 {
        self.unlabelled.iter().sum()
    }

    pub fn scores(&self, policy: UnlabelledPolicy) -> Scores {
        let n = self.n_classes;
        let diag: Vec<f64> = (0..n).map(|c| self.counts[c * n + c] as f64).collect();
        let pred_pixels: Vec<u64> = (0..n)
            .map(|c| (0..n).map(|g| self.counts[g * n + c]).sum())
            .collect();
        let gt_pixels: Vec<u64> = (0..n)
            .map(|g| {
                let labelled: u64 = self.counts[g * n..(g + 1) * n].iter().sum();
                labelled
                    + if policy == UnlabelledPolicy::Miss {
                        self.unlabelled[g]
                    } else {
                        0
                    }
            })
            .collect();
        let row: Vec<f64> = gt_pixels.iter().map(|&v| v as f64).collect();
        let col: Vec<f64> = pred_pixels.iter().map(|&v| v as f64).collect();
        let total: f64 = row.iter().sum();
        let acc = diag.iter().sum::<f64>() / total;
        let acc_cls: Vec<f64> = (0..n).map(|c| diag[c] / row[c]).collect();
        let iu: Vec<f64> = (0..n)
            .map(|c| diag[c] / (row[c] + col[c] - diag[c]))
            .collect();
        let valid: Vec<f64> = (0..n).filter(|&c| row[c] > 0.0).map(|c| iu[c]).collect();
        let fw: Vec<f64> = (0..n)
            .filter(|&c| row[c] > 0.0)
            .map(|c| (row[c] / total) * iu[c])
            .collect();
        Scores {
            pixel_accuracy: acc,
            mean_accuracy: nanmean(&acc_cls),
            frequency_weighted_iou: numpy_sum(&fw),
            mean_iou: nanmean(&valid),
            class_iou: iu,
            gt_pixels,
            pred_pixels,
        }
    }
}

/// numpy's `nanmean` of a float64 array: the non-NaN values summed (numpy order) over their count.
pub fn nanmean(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v })
        .collect();
    let count = values.iter().filter(|v| !v.is_nan()).count();
    numpy_sum(&kept) / count as f64
}

/// `np.sum` of a contiguous float64 array: numpy's pairwise summation (sequential below 8
/// elements, 8 interleaved accumulators up to 128, halves above). Checked against numpy 2.4 on
/// random arrays of 1 to 200 elements.
pub fn numpy_sum(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        pairwise_sum(values)
    }
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

pub use crate::argmax::background_score;

/// Class predictions of a CAM file, one label map per background exponent. `n_labels` counts
/// the background (21 for VOC); the file is checked by [`CamFile::validate`].
pub fn cam_predictions(
    cam: &CamFile,
    kind: CamKind,
    bg_powers: &[f64],
    n_labels: usize,
) -> Result<Vec<Vec<u8>>, EvalError> {
    let cams = cam
        .validate(kind, Some(n_labels.saturating_sub(1)))
        .map_err(EvalError::Cam)?;
    let n = cam.height * cam.width;
    let class_of: Vec<u8> = std::iter::once(BACKGROUND_LABEL)
        .chain(cam.keys.iter().map(|&key| (key + 1) as u8))
        .collect();
    let mut out = vec![vec![0u8; n]; bg_powers.len()];
    for i in 0..n {
        let (best, max) = first_max(cams, n, i);
        for (pred, &t) in out.iter_mut().zip(bg_powers) {
            // The background comes first, so it wins ties (as in `argmax_with_background`).
            pred[i] = if background_score(max, t).to_f32() >= max.to_f32() {
                class_of[0]
            } else {
                class_of[best + 1]
            };
        }
    }
    Ok(out)
}

/// What `eval` compares with the ground truth.
#[derive(Clone, Debug, PartialEq)]
pub enum Prediction {
    /// A directory of CAM files (`<id>.npz`, or the reference's `<id>.npy`).
    Cams(PathBuf),
    /// A directory of label masks (`<id>.png`).
    Masks(PathBuf),
}

/// The evaluation stage's settings.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub prediction: Prediction,
    /// Directory of ground-truth PNGs (`<id>.png`, 255 ignored).
    pub gt: PathBuf,
    /// Split file: the image ids (first token per line).
    pub split: PathBuf,
    pub classes: ClassSet,
    /// Background exponents tried for CAMs (the first with the best mIoU is reported).
    pub bg_powers: Vec<f64>,
    pub cam_kind: CamKind,
    pub unlabelled: UnlabelledPolicy,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
}

/// The reference's background exponents (`eval_cam.py` tries t = 1 and t = 2).
pub const DEFAULT_BG_POWERS: [f64; 2] = [1.0, 2.0];

impl EvalConfig {
    /// The reference's settings: background exponents 1 and 2 ([`DEFAULT_BG_POWERS`]), refined CAMs, 255 as a miss.
    pub fn new(prediction: Prediction, gt: PathBuf, split: PathBuf, classes: ClassSet) -> Self {
        EvalConfig {
            prediction,
            gt,
            split,
            classes,
            bg_powers: DEFAULT_BG_POWERS.to_vec(),
            cam_kind: CamKind::AttnHighres,
            unlabelled: UnlabelledPolicy::Miss,
            threads: None,
        }
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Ids in the split.
    pub images: usize,
    /// Images left out of the scores, with the reason.
    pub failures: Vec<(String, String)>,
    /// Whether CAMs (with a background sweep) or masks were evaluated.
    pub cams: bool,
    /// The background exponents tried (CAMs) and the scores of each.
    pub bg_powers: Vec<f64>,
    pub sweep: Vec<Scores>,
    /// Index of the first exponent with the best mIoU (0 for masks).
    pub best: usize,
    /// The confusion matrix of the best exponent.
    pub confusion: ConfusionMatrix,
    /// Name of each label id (background first).
    pub label_names: Vec<String>,
    pub unlabelled: UnlabelledPolicy,
}

impl EvalReport {
    /// A bar chart of the per-class IoU (classes with ground truth; VOC palette colours, grey
    /// for background), the mIoU in the title, as an RGB PNG.
    pub fn iou_chart_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let s = self.scores();
        let rows: Vec<(String, Option<f64>, crate::viz::Rgb)> = self
            .label_names
            .iter()
            .enumerate()
            .filter(|&(c, _)| s.gt_pixels[c] > 0)
            .map(|(c, name)| {
                let colour = if c == 0 {
                    [90, 90, 90]
                } else {
                    crate::viz::voc_colour(c.min(255) as u8)
                };
                (
                    name.clone(),
                    Some(s.class_iou[c]).filter(|v| v.is_finite()),
                    colour,
                )
            })
            .collect();
        let title = format!(
            "{} IoU per class, mIoU {:.1}%{}",
            if self.cams { "CAM" } else { "mask" },
            100.0 * s.mean_iou,
            if self.cams {
                format!(" (bg power {})", self.bg_powers[self.best])
            } else {
                String::new()
            }
        );
        crate::viz::iou_chart(&title, &rows).encode_png()
    }

    /// The scores that count: those of the best background exponent.
    pub fn scores(&self) -> &Scores {
        &self.sweep[self.best]
    }

    /// Images that were scored.
    pub fn evaluated(&self) -> usize {
        self.images - self.failures.len()
    }

    /// The report as JSON (non-finite scores as null).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let num = |v: f64| {
            if v.is_finite() {
                json!(v)
            } else {
                serde_json::Value::Null
            }
        };
        let s = self.scores();
        json!({
            "source": if self.cams { "cams" } else { "masks" },
            "images": self.images,
            "evaluated": self.evaluated(),
            "failed": self.failures.iter().map(|(id, e)| json!({"id": id, "error": e})).collect::<Vec<_>>(),
            "sweep": if self.cams {
                self.bg_powers.iter().zip(&self.sweep).map(|(t, s)| json!({"bg_power": t, "mean_iou": num(s.mean_iou)})).collect::<Vec<_>>()
            } else { vec![] },
            "bg_power": if self.cams { json!(self.bg_powers[self.best]) } else { serde_json::Value::Null },
            "mean_iou": num(s.mean_iou),
            "pixel_accuracy": num(s.pixel_accuracy),
            "mean_accuracy": num(s.mean_accuracy),
            "frequency_weighted_iou": num(s.frequency_weighted_iou),
            "unlabelled_pixels": self.confusion.total_unlabelled(),
            "classes": self.label_names.iter().enumerate().map(|(c, name)| json!({
                "index": c, "name": name, "iou": num(s.class_iou[c]),
                "gt_pixels": s.gt_pixels[c], "pred_pixels": s.pred_pixels[c],
            })).collect::<Vec<_>>(),
        })
    }
}

/// Could not evaluate at all (one bad image is a failure in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum EvalRunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Split(#[from] crate::datasets::DatasetError),
}

/// What one image contributes: one confusion matrix per background exponent (one for masks).
fn evaluate_image(
    id: &str,
    config: &EvalConfig,
    powers: &[f64],
) -> Result<Vec<ConfusionMatrix>, String> {
    let n = config.classes.num_labels();
    let gt_path = config.gt.join(format!("{id}.png"));
    let gt = read_label_png(&gt_path).map_err(|e| e.to_string())?;
    let (preds, pred_path, pw, ph) = match &config.prediction {
        Prediction::Cams(dir) => {
            let path = CamFile::locate(dir, id).map_err(|e| e.to_string())?;
            // The ground truth's size bounds what the CAM file may inflate to.
            let cam =
                CamFile::read_for_image(&path, gt.height, gt.width).map_err(|e| e.to_string())?;
            let p = cam_predictions(&cam, config.cam_kind, powers, n)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (p, path, cam.width, cam.height)
        }
        Prediction::Masks(dir) => {
            let path = dir.join(format!("{id}.png"));
            let m = read_label_png(&path).map_err(|e| e.to_string())?;
            (vec![m.labels], path, m.width, m.height)
        }
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

/// The evaluation stage: scores the predictions of every id of the split (in parallel); an
/// image that fails is reported and left out.
pub fn run(config: &EvalConfig, progress: &dyn Progress) -> Result<EvalReport, EvalRunError> {
    let ids = crate::datasets::read_split(&config.split)?;
    let cams = matches!(config.prediction, Prediction::Cams(_));
    let powers: Vec<f64> = if cams {
        config.bg_powers.clone()
    } else {
        vec![f64::NAN]
    };
    if powers.is_empty() {
        return Err(EvalRunError::Config(
            "give at least one background exponent".into(),
        ));
    }
    if cams && !powers.iter().all(|t| t.is_finite()) {
        return Err(EvalRunError::Config(
            "background exponents must be finite".into(),
        ));
    }
    let (Prediction::Cams(pred) | Prediction::Masks(pred)) = &config.prediction;
    for (what, dir) in [("ground truth", &config.gt), ("predictions", pred)] {
        if !dir.is_dir() {
            return Err(EvalRunError::Config(format!(
                "{} ({what}): not a directory",
                dir.display()
            )));
        }
    }
    let results = for_each_image(&ids, config.threads, "eval", progress, |id| {
        evaluate_image(id, config, &powers)
    })
    .map_err(EvalRunError::Config)?;
    let n = config.classes.num_labels();
    let mut totals = vec![ConfusionMatrix::new(n); powers.len()];
    let mut failures = Vec::new();
    for (id, r) in results {
        match r {
            Ok(ms) => totals.iter_mut().zip(&ms).for_each(|(t, m)| t.merge(m)),
            Err(e) => failures.push((id, e)),
        }
    }
    let sweep: Vec<Scores> = totals.iter().map(|m| m.scores(config.unlabelled)).collect();
    // The first exponent with the best mIoU (NaN never wins).
    let mut best = 0;
    for (i, s) in sweep.iter().enumerate() {
        if s.mean_iou > sweep[best].mean_iou || sweep[best].mean_iou.is_nan() {
            best = i;
        }
    }
    Ok(EvalReport {
        images: ids.len(),
        failures,
        cams,
        bg_powers: if cams { powers } else { vec![] },
        sweep,
        best,
        confusion: totals.swap_remove(best),
        label_names: config.classes.label_names(),
        unlabelled: config.unlabelled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn scores_follow_the_reference_formulas() {
        // 3 classes; class 2 never appears in the ground truth but is predicted once.
        let mut m = ConfusionMatrix::new(3);
        let gt = [0, 0, 1, 1, 1, 255, 0];
        let pr = [0, 1, 1, 1, 0, 2, 2];
        m.add(&gt, &pr, 7).unwrap();
        let s = m.scores(UnlabelledPolicy::Miss);
        // hist = [[1,1,1],[1,2,0],[0,0,0]]
        assert_eq!(s.gt_pixels, vec![3, 3, 0]);
        assert_eq!(s.pred_pixels, vec![2, 3, 1]);
        assert!((s.pixel_accuracy - 3.0 / 6.0).abs() < 1e-15);
        let iou0 = 1.0 / (3.0 + 2.0 - 1.0);
        let iou1 = 2.0 / (3.0 + 3.0 - 2.0);
        assert_eq!(s.class_iou[0], iou0);
        assert_eq!(s.class_iou[1], iou1);
        assert_eq!(s.class_iou[2], 0.0);
        assert_eq!(s.mean_iou, (iou0 + iou1) / 2.0);
        assert_eq!(s.mean_accuracy, (1.0 / 3.0 + 2.0 / 3.0) / 2.0);
    }

    #[test]
    fn unlabelled_predictions() {
        let mut m = ConfusionMatrix::new(2);
        m.add(&[1, 1, 0, 1], &[1, 255, 0, 255], 4).unwrap();
        assert_eq!(m.total_unlabelled(), 2);
        assert_eq!(m.scores(UnlabelledPolicy::Miss).class_iou[1], 1.0 / 3.0);
        assert_eq!(m.scores(UnlabelledPolicy::Skip).class_iou[1], 1.0);
        assert_eq!(
            m.add(&[0], &[7], 1),
            Err(EvalError::BadPrediction {
                value: 7,
                x: 0,
                y: 0,
                n: 2
            })
        );
    }

    #[test]
    fn numpy_summation_order() {
        let v: Vec<f64> = (0..300).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let s = numpy_sum(&v);
        let naive: f64 = v.iter().sum();
        assert!((s - naive).abs() < 1e-12);
        // np.sum([1e16, 1, 1, 1, 1, 1, 1, 1, 1, -1e16]) == 8.0 (the ones meet in the
        // accumulators before the large values cancel); a sequential sum gives 0.
        let mut c = vec![1e16];
        c.extend([1.0; 8]);
        c.push(-1e16);
        assert_eq!(numpy_sum(&c), 8.0);
        assert_eq!(numpy_sum(&[]), 0.0);
        assert_eq!(nanmean(&[1.0, f64::NAN, 3.0]), 2.0);
    }

    #[test]
    fn cam_predictions_with_background_sweep() {
        let h = |v: f32| f16::from_f32(v);
        let cam = CamFile {
            keys: vec![4, 9],
            height: 1,
            width: 4,
            // pixel maxima: 0.9 (cam 1), 0.5 (tie: cam 0 first), 0.3 (cam 1), 0.5 (cam 0)
            attn_highres: vec![
                h(0.2),
                h(0.5),
                h(0.1),
                h(0.5),
                h(0.9),
                h(0.5),
                h(0.3),
                h(0.25),
            ],
            highres: None,
        };
        let p = cam_predictions(&cam, CamKind::AttnHighres, &[1.0, 2.0, 0.4], 21).unwrap();
        // t = 1: bg = 0.1, 0.5 (tie -> background), 0.7, 0.5 (tie)
        assert_eq!(p[0], vec![10, 0, 0, 0]);
        // t = 2: bg = 0.01, 0.25, 0.49 (> 0.3), 0.25
        assert_eq!(p[1], vec![10, 5, 0, 5]);
        // t = 0.4: constant 0.4
        assert_eq!(p[2], vec![10, 5, 0, 5]);
        assert!(cam_predictions(&cam, CamKind::Highres, &[1.0], 21).is_err());
        assert!(cam_predictions(&cam, CamKind::AttnHighres, &[1.0], 10).is_err());
        let mut nan = cam.clone();
        nan.attn_highres[3] = f16::NAN;
        assert!(cam_predictions(&nan, CamKind::AttnHighres, &[1.0], 21)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
    }
}
