//! The loss curve as a PNG: raw loss (light) and its moving average over 20 iterations (dark),
//! iterations on x, loss on y from 0 to the largest value.

use crate::error::{Result, TrainError};
use std::path::Path;

const W: usize = 640;
const H: usize = 360;
const M: usize = 30;

fn line(img: &mut [u8], (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (
            (x0 + (x1 - x0) * t).round() as isize,
            (y0 + (y1 - y0) * t).round() as isize,
        );
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let o = (y as usize * W + x as usize) * 3;
            img[o..o + 3].copy_from_slice(&rgb);
        }
    }
}

pub fn plot_loss(path: &Path, history: &[(usize, f32)]) -> Result<()> {
    let mut img = vec![255u8; W * H * 3];
    let pts: Vec<(usize, f32)> = history
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let (px, py) = ((M, W - M / 2), (H - M, M / 2));
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
        let lmax = pts.iter().map(|p| p.1).fold(0f32, f32::max).max(1e-6) as f64;
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
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        w.write_image_data(&img)
            .map_err(|e| TrainError::Config(e.to_string()))?;
    }
    let tmp = path.with_extension("png.part");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}
