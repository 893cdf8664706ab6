//! The loss curve as a PNG: raw loss (light) and its moving average over 20 iterations (dark),
//! iterations on x, loss on y from 0 to the largest value, with a title and labelled axes. The
//! canvas and its bitmap text are the pictures' shared ones (`clip_es_data::canvas`).

use crate::error::{Result, TrainError};
use clip_es_data::canvas::Canvas;
use std::path::Path;

const W: usize = 640;
const H: usize = 360;
/// Left margin (room for the loss labels); the bottom one is `M`.
const L: usize = 64;
const M: usize = 30;
const TEXT: [u8; 3] = [40, 40, 40];

/// Draws `s` in 8x8 glyphs with its top-left corner at (x, y), clipped to the picture.
fn text(img: &mut Canvas, x: usize, y: usize, s: &str, rgb: [u8; 3]) {
    img.draw_text(x, y, s, 1, rgb);
}

/// A tick value in at most 7 characters, to 3 significant digits (ticks are round numbers, see
/// [`axis_top`], so nothing is lost).
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (0.01..10000.0).contains(&v.abs()) {
        let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.digits$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        s[..s.len().min(7)].to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// The top of the loss axis: the smallest of 1, 2, 2.5, 5 times a power of ten at or above
/// `max`, so the three ticks (0, half, top) are round numbers instead of the raw maximum.
fn axis_top(max: f64) -> f64 {
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&t| t >= max * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

fn line(img: &mut Canvas, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (
            (x0 + (x1 - x0) * t).round() as isize,
            (y0 + (y1 - y0) * t).round() as isize,
        );
        if x >= 0 && y >= 0 {
            img.set(x as usize, y as usize, rgb);
        }
    }
}

pub fn plot_loss(path: &Path, history: &[(usize, f32)]) -> Result<()> {
    let mut img = Canvas::new(W, H, [255, 255, 255]);
    let pts: Vec<(usize, f32)> = history
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let (px, py) = ((L, W - M / 2), (H - M, M));
    text(
        &mut img,
        L,
        8,
        "training loss (light) and its 20-iteration mean (dark)",
        TEXT,
    );
    line(
        &mut img,
        (px.0 as f64, py.0 as f64),
        (px.1 as f64, py.0 as f64),
        [0, 0, 0],
    );
    line(
        &mut img,
        (px.0 as f64, py.0 as f64),
        (px.0 as f64, py.1 as f64),
        [0, 0, 0],
    );
    if pts.len() >= 2 {
        let (i0, i1) = (pts[0].0 as f64, pts[pts.len() - 1].0 as f64);
        let lmax = axis_top(pts.iter().map(|p| p.1).fold(0f32, f32::max).max(1e-6) as f64);
        // Loss ticks at 0, half and the maximum; iterations at both ends.
        for k in 0..=2 {
            let v = lmax * k as f64 / 2.0;
            let y = py.0 - (py.0 - py.1) * k / 2;
            line(
                &mut img,
                ((px.0 - 4) as f64, y as f64),
                (px.0 as f64, y as f64),
                [0, 0, 0],
            );
            let label = short(v);
            text(
                &mut img,
                px.0 - 8 - 8 * label.len(),
                y.saturating_sub(4),
                &label,
                TEXT,
            );
        }
        let (first, last) = (
            format!("{}", pts[0].0),
            format!("iteration {}", pts[pts.len() - 1].0),
        );
        text(&mut img, px.0, py.0 + 8, &first, TEXT);
        text(
            &mut img,
            px.1.saturating_sub(8 * last.len()),
            py.0 + 8,
            &last,
            TEXT,
        );
        let map = |it: f64, l: f64| {
            (
                px.0 as f64 + (it - i0) / (i1 - i0).max(1.0) * (px.1 - px.0) as f64,
                py.0 as f64 - l / lmax * (py.0 - py.1) as f64,
            )
        };
        for w in pts.windows(2) {
            line(
                &mut img,
                map(w[0].0 as f64, w[0].1 as f64),
                map(w[1].0 as f64, w[1].1 as f64),
                [170, 200, 240],
            );
        }
        let avg: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let a = i.saturating_sub(19);
                let s: f64 = pts[a..=i].iter().map(|p| p.1 as f64).sum();
                (pts[i].0 as f64, s / (i + 1 - a) as f64)
            })
            .collect();
        for w in avg.windows(2) {
            line(
                &mut img,
                map(w[0].0, w[0].1),
                map(w[1].0, w[1].1),
                [20, 60, 160],
            );
        }
    }
    let bytes = img
        .encode_png()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    clip_es_data::atomic::write_bytes_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels_fit_the_margin() {
        for (v, want) in [
            (0.0, "0"),
            (3.6837, "3.68"),
            (85.288, "85.3"),
            (1234.5678, "1235"),
            (125.0, "125"),
            (0.25, "0.25"),
        ] {
            assert_eq!(short(v), want);
        }
        assert_eq!(short(123456.0), "1.2e5");
        assert!(short(0.001234).len() <= 7);
    }

    #[test]
    fn loss_ticks_are_round_numbers() {
        // A maximum loss of 237.321 gives the ticks 0, 125 and 250, not 118.66 and 237.321.
        let top = axis_top(237.321);
        let ticks: Vec<String> = (0..=2).map(|k| short(top * k as f64 / 2.0)).collect();
        assert_eq!(ticks, ["0", "125", "250"]);
        for (max, want) in [
            (1.0, 1.0),
            (0.93, 1.0),
            (3.2, 5.0),
            (2.1, 2.5),
            (12.0, 20.0),
        ] {
            assert!(
                (axis_top(max) - want).abs() < 1e-9,
                "{max}: {}",
                axis_top(max)
            );
        }
    }

    #[test]
    fn curve_is_a_png_with_labels_and_both_lines() {
        let dir = std::env::temp_dir().join(format!("clip-es-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.png");
        let history: Vec<(usize, f32)> = (1..=200).map(|i| (i, 4.0 / (i as f32).sqrt())).collect();
        plot_loss(&path, &history).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0u8; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width as usize, info.height as usize), (W, H));
        let count = |rgb: [u8; 3]| buf.chunks_exact(3).filter(|p| *p == rgb).count();
        assert!(count(TEXT) > 200, "labels missing");
        assert!(count([20, 60, 160]) > 100, "mean line missing");
        assert!(count([170, 200, 240]) > 50, "raw line missing");
        // Text in the left margin: the loss labels.
        let margin_text = (M..H - M)
            .flat_map(|y| (0..L - 4).map(move |x| (y * W + x) * 3))
            .filter(|&o| buf[o..o + 3] == TEXT)
            .count();
        assert!(margin_text > 20, "no loss labels in the margin");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
