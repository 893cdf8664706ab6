//! A 4000x3000 photo through every stage that runs the ViT besides `cams`: label-free
//! `segment`, `prompts`, the clip-decoder's feature cache in `train` and decoder `predict`.
//! Each sizes the ViT input by the one rule (`clip_es_model::vit_input_size`: downscaled to
//! `--max-side`, a thin panorama keeping its shorter side) and checks its memory estimate
//! before the ViT runs: under `ulimit -v` and `--memory-limit` the photo finishes downscaled,
//! or, with `--max-side 0`, fails alone naming itself and the options that help, at once
//! instead of after minutes of a 47 001-token forward pass. The tiny random CLIP keeps each
//! run to seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_clip() -> String {
    s(&root().join("../clip-es-model/tests/fixtures/tiny-deep-hf"))
}

use clip_es_testkit::TempDir;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `clip-es ARGS` with its address space limited to 4 GB (`ulimit -v`), killed after `secs`
/// seconds (exit 124): a stage that ran a full-size ViT pass would take minutes.
fn clip_es_limited(secs: u64, args: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 4000000 && exec timeout {secs} \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap();
    (o, started.elapsed())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// An RGB PNG of one flat colour (fast to encode at photo sizes), or noise when `noise`.
pub(crate) fn write_photo(path: &Path, width: u32, height: u32, noise: bool) {
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
        (0..n).map(|i| [90, 140, 60][i % 3]).collect()
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

/// A pseudo mask of three classes in vertical bands.
fn write_mask(path: &Path, width: usize, height: usize) {
    let labels: Vec<u8> = (0..width * height)
        .map(|i| ((i % width) * 3 / width) as u8)
        .collect();
    let png = clip_es::masks::encode_label_png(&labels, width, height, false).unwrap();
    std::fs::write(path, png).unwrap();
}

/// Images `big` (4000x3000) and `small` (64x48) under `dir/images`.
fn photos(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    write_photo(&images.join("big.png"), 4000, 3000, false);
    write_photo(&images.join("small.png"), 64, 48, true);
    images
}

/// Label-free `segment`: the 4000x3000 photo is tagged and segmented at 1024x768 within the
/// limit (its mask at its own size); with `--max-side 0` its CAMs (47 001 tokens) are over the
/// limit, and it fails before its tagging pass, as with `--tags-only` the tagging pass's own
/// estimate does; the small photo is segmented either way.
#[test]
fn label_free_segment_downscales_or_refuses_a_large_photo() {
    let dir = TempDir::new("segment");
    let images = photos(dir.path());
    let (big, small) = (s(&images.join("big.png")), s(&images.join("small.png")));
    let run = |out: &str, limit: &str, extra: &[&str]| {
        let mut args = strings(&["segment", &big, &small, "--model", &tiny_clip(), "--out"]);
        args.push(s(&dir.path().join(out)));
        args.extend(strings(&[
            "--no-crf",
            "--threads",
            "2",
            "--memory-limit",
            limit,
        ]));
        args.extend(strings(extra));
        clip_es_limited(90, &args)
    };
    let (o, _) = run("fits", "1500", &[]);
    ok(&o, "segment");
    let m = clip_es::masks::read_label_png(&dir.path().join("fits/big.png")).unwrap();
    assert_eq!((m.width, m.height), (4000, 3000));

    for (out, limit, extra, purpose) in [
        ("cams", "1500", &["--max-side", "0"][..], "CAMs"),
        (
            "tags",
            "200",
            &["--max-side", "0", "--tags-only"][..],
            "tags",
        ),
    ] {
        let (o, took) = run(out, limit, extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{out}: {err}");
        assert!(
            err.contains("big.png")
                && err.contains("4000x3000")
                && err.contains("47001 tokens")
                && err.contains(&format!("its {purpose} need"))
                && err.contains("--max-side"),
            "{out}: {err}"
        );
        assert!(took < Duration::from_secs(60), "{out}: {took:?}");
    }
    assert!(dir.path().join("cams/small.png").is_file());
    assert!(!dir.path().join("cams/big.png").exists());
}

/// `prompts`: the 4000x3000 photo's embedding is computed at 1024x768 (seconds, not minutes
/// at 47 001 tokens); with `--max-side 0` and a limit below its forward pass it fails alone,
/// named, and the sharpness is still reported from the other image; a limit of 0 is refused
/// before any work.
#[test]
fn prompts_downscales_or_refuses_a_large_photo() {
    let dir = TempDir::new("prompts");
    let images = photos(dir.path());
    let split = dir.path().join("split.txt");
    std::fs::write(&split, "big cat dog\nsmall cat dog\n").unwrap();
    let templates = dir.path().join("templates.txt");
    std::fs::write(&templates, "a photo of {}.\na clean origami {}.\n").unwrap();
    let run = |json: &str, extra: &[&str]| {
        let mut args = strings(&["prompts", "--dataset", "voc", "--model", &tiny_clip()]);
        args.extend([
            "--images".to_string(),
            s(&images),
            "--split".to_string(),
            s(&split),
            "--templates".to_string(),
            s(&templates),
            "--json".to_string(),
            s(&dir.path().join(json)),
            "--threads".to_string(),
            "2".to_string(),
        ]);
        args.extend(strings(extra));
        clip_es_limited(90, &args)
    };
    let (o, took) = run("fits.json", &["--memory-limit", "1500"]);
    ok(&o, "prompts");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fits.json")).unwrap()).unwrap();
    assert_eq!(got["images_used"], 2);

    let (o, took) = run(
        "refused.json",
        &["--max-side", "0", "--memory-limit", "200"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.png")
            && err.contains("4000x3000")
            && err.contains("--max-side")
            && err.contains("--memory-limit"),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("refused.json")).unwrap()).unwrap();
    assert_eq!(got["images_used"], 1);
    assert_eq!(got["failed_images"], 1);

    let (o, _) = run("zero.json", &["--memory-limit", "0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: --memory-limit"), "{err}");
}

fn train_args(dir: &Path, images: &Path, masks: &Path, split: &Path, out: &str) -> Vec<String> {
    let mut args = strings(&[
        "train",
        "--arch",
        "clip-decoder",
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
        "--jobs",
        "2",
        "--model",
        &tiny_clip(),
    ]);
    for (flag, path) in [
        ("--images", images.to_path_buf()),
        ("--masks", masks.to_path_buf()),
        ("--split", split.to_path_buf()),
        ("--out", dir.join(out)),
    ] {
        args.push(flag.to_string());
        args.push(s(&path));
    }
    args
}

/// The clip-decoder's feature cache: the 4000x3000 photo is cached at 1024x768 (a 48x64
/// grid) within the limit, and a 2000x40 panorama by the rule of every stage (its 40-pixel
/// side kept: a 3x125 grid, the input its CAMs would have); with `--max-side 0` the large
/// photo fails by name after the others are cached.
#[test]
fn the_feature_cache_downscales_or_refuses_a_large_photo() {
    let dir = TempDir::new("train");
    let images = photos(dir.path());
    write_photo(&images.join("strip.png"), 2000, 40, true);
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    write_mask(&masks.join("big.png"), 4000, 3000);
    write_mask(&masks.join("small.png"), 64, 48);
    write_mask(&masks.join("strip.png"), 2000, 40);
    let split = dir.path().join("train.txt");
    std::fs::write(&split, "big\nsmall\nstrip\n").unwrap();

    let mut args = train_args(dir.path(), &images, &masks, &split, "fits");
    args.extend(strings(&["--memory-limit", "1000"]));
    let (o, _) = clip_es_limited(120, &args);
    ok(&o, "train");
    let grid = |out: &str, id: &str| {
        let path = dir
            .path()
            .join(out)
            .join(format!("features/{id}.safetensors"));
        let (f, _) = clip_es_train::features::read_cached(&path).unwrap();
        (f.gh, f.gw)
    };
    assert_eq!(grid("fits", "big"), (48, 64));
    assert_eq!(grid("fits", "small"), (3, 4));
    assert_eq!(grid("fits", "strip"), (3, 125));

    let mut args = train_args(dir.path(), &images, &masks, &split, "refused");
    args.extend(strings(&["--memory-limit", "200", "--max-side", "0"]));
    let (o, took) = clip_es_limited(120, &args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("big.png")
            && err.contains("4000x3000")
            && err.contains("its features need")
            && err.contains("--max-side"),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(grid("refused", "small"), (3, 4));
}

/// Decoder `predict`: the 4000x3000 photo's label map (at its own size) comes from a 1024x768
/// ViT input within the limit; with `--max-side 0` it fails alone, named, at once, and the
/// small photo's map is written.
#[test]
fn decoder_predict_downscales_or_refuses_a_large_photo() {
    let dir = TempDir::new("predict");
    let images = photos(dir.path());
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    write_mask(&masks.join("small.png"), 64, 48);
    let train_split = dir.path().join("train.txt");
    std::fs::write(&train_split, "small\n").unwrap();
    let (o, _) = clip_es_limited(
        120,
        &train_args(dir.path(), &images, &masks, &train_split, "train"),
    );
    ok(&o, "train");
    let split = dir.path().join("predict.txt");
    std::fs::write(&split, "big\nsmall\n").unwrap();
    let run = |out: &str, limit: &str, extra: &[&str]| {
        let mut args = strings(&["predict", "--jobs", "2", "--memory-limit", limit]);
        for (flag, path) in [
            ("--checkpoint", dir.path().join("train/final.safetensors")),
            ("--images", images.clone()),
            ("--split", split.clone()),
            ("--out", dir.path().join(out)),
        ] {
            args.push(flag.to_string());
            args.push(s(&path));
        }
        args.extend(strings(extra));
        clip_es_limited(90, &args)
    };
    // About 734 MB at 1024x768 with the tiny networks, 1106 MB at full size.
    let (o, _) = run("fits", "900", &[]);
    ok(&o, "predict");
    let m = clip_es::masks::read_label_png(&dir.path().join("fits/big.png")).unwrap();
    assert_eq!((m.width, m.height), (4000, 3000));

    let (o, took) = run("refused", "900", &["--max-side", "0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.png") && err.contains("4000x3000") && err.contains("--max-side"),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(dir.path().join("refused/small.png").is_file());
    assert!(!dir.path().join("refused/big.png").exists());
}
