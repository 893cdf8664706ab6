//! Memory bounds of `clip-es predict` and of the clip-decoder's feature cache in `train`: every
//! image's peak is estimated before its network runs, an image over the limit (`--memory-limit`
//! or what `ulimit -v` leaves) fails alone naming itself and the options that help while the
//! others are written, the decoder's ViT sees at most `--max-side` pixels, and `--scales` is
//! range-checked before any work. Tiny networks trained for one iteration on a small noise
//! photo keep each test to seconds.

use super::common::{s, tiny_clip};
use clip_es_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("predict-memory-{tag}"))
}

fn clip_es(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap()
}

/// `clip-es ARGS` in a shell whose address space is limited to `kib` KiB (`ulimit -v`).
fn clip_es_limited(kib: u64, args: &[String]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed:\n{}", stderr(o));
}

/// An RGB PNG of `width` x `height`: noise when `noise`, else one flat colour (fast to encode
/// at photo sizes).
fn write_photo(path: &Path, width: u32, height: u32, noise: bool) {
    let n = width as usize * height as usize * 3;
    let data: Vec<u8> = if noise {
        let mut x = 0x2545_f491_u32;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    } else {
        vec![90; n]
    };
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.set_compression(png::Compression::Fast);
        let mut w = e.write_header().unwrap();
        w.write_image_data(&data).unwrap();
    }
    std::fs::write(path, out).unwrap();
}

/// A checkpoint of `arch` trained for one iteration on one 48x40 noise photo with a pseudo
/// mask of three classes; returns (checkpoint, images directory).
fn tiny_checkpoint(dir: &Path, arch: &str) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    let masks = dir.join("masks");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let (w, h) = (48usize, 40usize);
    write_photo(&images.join("train.png"), w as u32, h as u32, true);
    let labels: Vec<u8> = (0..w * h).map(|i| ((i % w) * 3 / w) as u8).collect();
    let png = clip_es::masks::encode_label_png(&labels, w, h, false).unwrap();
    std::fs::write(masks.join("train.png"), png).unwrap();
    let split = dir.join("train.txt");
    std::fs::write(&split, "train\n").unwrap();
    let out = dir.join("train");
    let mut args: Vec<String> = [
        "train",
        "--arch",
        arch,
        "--images",
        &s(&images),
        "--masks",
        &s(&masks),
        "--split",
        &s(&split),
        "--out",
        &s(&out),
        "--num-classes",
        "3",
        "--iters",
        "1",
        "--batch",
        "1",
        "--iter-size",
        "1",
        "--jobs",
        "2",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let extra: &[&str] = match arch {
        "deeplab-v2" => &[
            "--width",
            "2",
            "--blocks",
            "1,1,1,1",
            "--rates",
            "1,2",
            "--crop",
            "33",
            "--random-init",
        ],
        _ => &["--hidden", "8", "--grid-crop", "2"],
    };
    args.extend(extra.iter().map(|x| x.to_string()));
    if arch == "clip-decoder" {
        args.extend(["--model".to_string(), s(&tiny_clip())]);
    }
    ok(
        &clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        "train",
    );
    (out.join("final.safetensors"), images)
}

fn predict_args(dir: &Path, checkpoint: &Path, images: &Path, ids: &[&str]) -> Vec<String> {
    let split = dir.join("predict.txt");
    std::fs::write(&split, ids.join("\n")).unwrap();
    [
        "predict",
        "--checkpoint",
        &s(checkpoint),
        "--images",
        &s(images),
        "--split",
        &s(&split),
        "--out",
        &s(&dir.join("pred")),
        "--jobs",
        "2",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

/// A 6000x4000 photo in a `predict --crf` split under `ulimit -v 6000000`: its CRF alone
/// needs more than the address space left, so it fails before its network runs, named with
/// the options that help, and the next image's label map is written (exit 1, no abort).
#[test]
fn a_photo_too_large_for_the_crf_fails_alone_under_ulimit() {
    let dir = tmpdir("ulimit");
    let (checkpoint, images) = tiny_checkpoint(&dir, "deeplab-v2");
    write_photo(&images.join("big.png"), 6000, 4000, false);
    write_photo(&images.join("small.png"), 64, 48, true);
    let mut args = predict_args(&dir, &checkpoint, &images, &["big", "small"]);
    args.push("--crf".into());
    let o = clip_es_limited(6_000_000, &args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.png")
            && err.contains("6000x4000")
            && err.contains("--crf")
            && err.contains("--memory-limit"),
        "{err}"
    );
    let small = clip_es::masks::read_label_png(&dir.join("pred/small.png")).unwrap();
    assert_eq!((small.width, small.height), (64, 48));
    assert!(!dir.join("pred/big.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--memory-limit` bounds every image: one over it fails naming the limit, the others are
/// written; without the CRF the same image fits.
#[test]
fn memory_limit_refuses_one_image_and_writes_the_others() {
    let dir = tmpdir("limit");
    let (checkpoint, images) = tiny_checkpoint(&dir, "deeplab-v2");
    write_photo(&images.join("photo.png"), 1200, 900, true);
    write_photo(&images.join("small.png"), 64, 48, true);
    let mut args = predict_args(&dir, &checkpoint, &images, &["photo", "small"]);
    args.extend(["--crf", "--memory-limit", "200"].map(String::from));
    let o = clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("photo.png") && err.contains("1200x900") && err.contains("200 MB"),
        "{err}"
    );
    assert!(dir.join("pred/small.png").is_file());
    assert!(!dir.join("pred/photo.png").exists());
    // Without the CRF the photo needs far less and is written (`--overwrite`: the folder's
    // maps were made with the CRF).
    let mut args: Vec<String> = args.into_iter().filter(|a| a != "--crf").collect();
    args.push("--overwrite".into());
    let o = clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o, "predict without the CRF");
    let m = clip_es::masks::read_label_png(&dir.join("pred/photo.png")).unwrap();
    assert_eq!((m.width, m.height), (1200, 900));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The decoder's ViT sees at most `--max-side` pixels: a 2400x1800 photo runs at 1024x768 by
/// default (3 073 tokens, not 16 951: seconds instead of minutes), its label map still at the
/// photo's size. Its estimate (about 281 MB with the tiny networks) fits a 340 MB limit; with
/// `--max-side 0` (about 398 MB) it fails naming `--max-side`.
#[test]
fn the_decoder_scales_large_photos_down_for_its_vit() {
    let dir = tmpdir("decoder");
    let (checkpoint, images) = tiny_checkpoint(&dir, "clip-decoder");
    write_photo(&images.join("photo.png"), 2400, 1800, true);
    let args = predict_args(&dir, &checkpoint, &images, &["photo"]);
    let started = std::time::Instant::now();
    ok(
        &clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        "predict",
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    let m = clip_es::masks::read_label_png(&dir.join("pred/photo.png")).unwrap();
    assert_eq!((m.width, m.height), (2400, 1800));
    let mut args = args;
    args.extend(["--memory-limit", "340", "--overwrite"].map(String::from));
    ok(
        &clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>()),
        "predict --memory-limit 340",
    );
    args.extend(["--max-side", "0"].map(String::from));
    let o = clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("photo.png") && err.contains("2400x1800") && err.contains("--max-side"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The feature cache of `train --arch clip-decoder` sizes its input by the rule of every
/// stage: `--max-side 32` never takes a photo's shorter side below 224 pixels or its own size,
/// so a 48x40 photo keeps its 48x48 input (a 3x3 patch grid), as its CAMs would.
#[test]
fn the_feature_cache_honours_max_side() {
    let dir = tmpdir("features");
    let (checkpoint, _) = tiny_checkpoint(&dir, "clip-decoder");
    assert!(checkpoint.is_file());
    let (full, _) =
        clip_es_train::features::read_cached(&dir.join("train/features/train.safetensors"))
            .unwrap();
    assert_eq!((full.gh, full.gw), (3, 3));
    let out = dir.join("small");
    let o = clip_es(&[
        "train",
        "--arch",
        "clip-decoder",
        "--images",
        &s(&dir.join("images")),
        "--masks",
        &s(&dir.join("masks")),
        "--split",
        &s(&dir.join("train.txt")),
        "--out",
        &s(&out),
        "--num-classes",
        "3",
        "--iters",
        "1",
        "--batch",
        "1",
        "--iter-size",
        "1",
        "--hidden",
        "8",
        "--grid-crop",
        "2",
        "--model",
        &s(&tiny_clip()),
        "--max-side",
        "32",
        "--jobs",
        "2",
    ]);
    ok(&o, "train --max-side 32");
    let (small, _) =
        clip_es_train::features::read_cached(&out.join("features/train.safetensors")).unwrap();
    assert_eq!((small.gh, small.gw), (3, 3));
    // A limit below the ViT's estimate is an error naming the image, not an abort.
    let o = clip_es(&[
        "train",
        "--arch",
        "clip-decoder",
        "--images",
        &s(&dir.join("images")),
        "--masks",
        &s(&dir.join("masks")),
        "--split",
        &s(&dir.join("train.txt")),
        "--out",
        &s(&dir.join("limited")),
        "--num-classes",
        "3",
        "--iters",
        "1",
        "--batch",
        "1",
        "--iter-size",
        "1",
        "--model",
        &s(&tiny_clip()),
        "--memory-limit",
        "0",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--memory-limit"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--scales` of `predict` and `train` is checked before any work: a scale outside [0.1, 4]
/// is an `error:` naming the option (exit 2), not an abort or a panic.
#[test]
fn scales_out_of_range_are_refused_before_any_work() {
    let dir = tmpdir("scales");
    let (checkpoint, images) = tiny_checkpoint(&dir, "deeplab-v2");
    for bad in ["100", "0.001", "0", "-1", "NaN", "1,5"] {
        let mut args = predict_args(&dir, &checkpoint, &images, &["train"]);
        args.push(format!("--scales={bad}"));
        let o = clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "predict --scales {bad}: {err}");
        assert!(err.contains("error:") && err.contains("--scales"), "{err}");
        assert!(!dir.join("pred/train.png").exists());
    }
    for bad in ["100", "0", "0.5,5"] {
        let out = dir.join(format!("train-{bad}"));
        let o = clip_es(&[
            "train",
            "--arch",
            "deeplab-v2",
            "--random-init",
            "--images",
            &s(&images),
            "--masks",
            &s(&dir.join("masks")),
            "--split",
            &s(&dir.join("train.txt")),
            "--out",
            &s(&out),
            "--num-classes",
            "3",
            "--width",
            "2",
            "--blocks",
            "1,1,1,1",
            "--iters",
            "1",
            "--batch",
            "1",
            "--iter-size",
            "1",
            "--crop",
            "33",
            &format!("--scales={bad}"),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "train --scales {bad}: {err}");
        assert!(err.contains("--scales"), "{err}");
        assert!(
            !out.exists(),
            "train --scales {bad} created {}",
            out.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
