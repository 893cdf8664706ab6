//! Timing of the image input path (release build):
//!
//!   cargo run --release -p clip-es-image --example bench_clip_input [FILE.jpg]
//!
//! Without a file it encodes a synthetic 500x375 photo-like JPEG (q90, 4:2:0) and times
//! decode + Pillow-bicubic resize to 512x384 + normalisation (`DecodedImage::open` +
//! `clip_input_for_patch(16)`), `load_rgb`, and `resize_bilinear_f32` of a 24x32 map to 375x500.

use std::path::PathBuf;
use std::time::Instant;

use clip_es_image::{load_rgb, resize_bilinear_f32, DecodedImage};

fn synthetic_jpeg() -> PathBuf {
    let (w, h) = (500usize, 375usize);
    let mut px = Vec::with_capacity(w * h * 3);
    let mut noise = 12345u32;
    for y in 0..h {
        for x in 0..w {
            noise = noise.wrapping_mul(1664525).wrapping_add(1013904223);
            let n = (noise >> 28) as f32;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let r = 128.0 + 90.0 * (fx * 9.0).sin() * (fy * 4.0).cos() + n;
            let g = 100.0 + 80.0 * (fx * fy * 20.0).sin() + n;
            let b = 60.0 + 150.0 * fy + n;
            px.extend([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8));
        }
    }
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(w, h);
    c.set_quality(90.0);
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(&px).unwrap();
    let bytes = started.finish().unwrap();
    let path = std::env::temp_dir().join(format!("clip-es-bench-{}.jpg", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn time<T>(label: &str, reps: usize, mut f: impl FnMut() -> T) {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!(
        "{label}: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() {
    let (path, temporary) = match std::env::args().nth(1) {
        Some(p) => (PathBuf::from(p), false),
        None => (synthetic_jpeg(), true),
    };
    let img = DecodedImage::open(&path).unwrap();
    println!(
        "{}: {} {}x{}",
        path.display(),
        img.mode().name(),
        img.width(),
        img.height()
    );
    time("decode", 50, || DecodedImage::open(&path).unwrap());
    time(
        "resize + convert + normalise (clip_input_for_patch(16))",
        50,
        || img.clip_input_for_patch(16).unwrap(),
    );
    time("decode + resize + normalise", 50, || {
        DecodedImage::open(&path)
            .unwrap()
            .clip_input_for_patch(16)
            .unwrap()
    });
    time("load_rgb (cv2.imread)", 50, || load_rgb(&path).unwrap());
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (sh, sw) = (h.div_ceil(16), w.div_ceil(16));
    let map: Vec<f32> = (0..sh * sw).map(|i| (i % 17) as f32 / 17.0).collect();
    time(
        &format!("resize_bilinear_f32 {sh}x{sw} -> {h}x{w}"),
        50,
        || resize_bilinear_f32(&map, sw, sh, w, h),
    );
    if temporary {
        let _ = std::fs::remove_file(&path);
    }
}
