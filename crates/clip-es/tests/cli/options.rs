//! Option values end to end: every numeric option of `train` and `predict` out of its range
//! (zero, negative, NaN, infinite, huge) is refused before any work with an `error:` line naming
//! the option and exit code 2 (never a panic, exit 101, or an abort), and nothing is written.
//! Also: DeepLab-v2 without initial weights, masks without a confident pixel, a loss that
//! becomes NaN, and a run with nothing left to train, whose report names only files that exist.
//! Every file is made by the test (the inputs are the example photos and their ground truth).

use super::common::{examples, root, s, tiny_clip};
use clip_es_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A torchvision-style ResNet state dict for `--width 2 --blocks 1,2,2,2`.
fn tiny_init() -> PathBuf {
    root().join("../clip-es-train/tests/data/tiny_torchvision.pth")
}

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("options-{tag}"))
}

/// The binary under test; `CLIP_ES_BIN` runs these tests against another build.
fn clip_es(args: &[String]) -> Output {
    let bin = std::env::var_os("CLIP_ES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_clip-es")));
    Command::new(bin).args(args).output().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `base` (options with a value each) with the options of `extra` (`--name value`,
/// `--name=value` or a flag) replacing those of the same name: clap refuses an option given
/// twice.
fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    let mut i = 0;
    while i < extra.len() {
        let name = extra[i].split('=').next().unwrap();
        if let Some(at) = base.iter().position(|a| a == name) {
            base.drain(at..at + 2);
        }
        base.push(extra[i].to_string());
        let has_value =
            !extra[i].contains('=') && extra.get(i + 1).is_some_and(|v| !v.starts_with("--"));
        if has_value {
            base.push(extra[i + 1].to_string());
            i += 1;
        }
        i += 1;
    }
    base
}

/// A two-image split of the examples, trained on their ground truth.
fn split(dir: &Path) -> PathBuf {
    let p = dir.join("split.txt");
    std::fs::write(&p, "astronaut\nhorse\n").unwrap();
    p
}

/// `train` of a tiny DeepLab-v2 (one iteration, initialised from a tiny torchvision file) into
/// `out`, with `extra` appended (a later option overrides an earlier one).
fn deeplab_args(dir: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let v = strings(&[
        "train",
        "--arch",
        "deeplab-v2",
        "--images",
        &s(&examples().join("images")),
        "--masks",
        &s(&examples().join("gt")),
        "--split",
        &s(&split(dir)),
        "--out",
        &s(out),
        "--init",
        &s(&tiny_init()),
        "--width",
        "2",
        "--blocks",
        "1,2,2,2",
        "--iters",
        "1",
        "--batch",
        "1",
        "--iter-size",
        "1",
        "--crop",
        "33",
        "--threads",
        "1",
    ]);
    with(v, extra)
}

/// `train` of a tiny clip-decoder (tiny random CLIP) into `out`, `extra` appended.
fn decoder_args(dir: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let v = strings(&[
        "train",
        "--arch",
        "clip-decoder",
        "--images",
        &s(&examples().join("images")),
        "--masks",
        &s(&examples().join("gt")),
        "--split",
        &s(&split(dir)),
        "--out",
        &s(out),
        "--model",
        &s(&tiny_clip()),
        "--hidden",
        "8",
        "--iters",
        "1",
        "--batch",
        "1",
        "--iter-size",
        "1",
        "--grid-crop",
        "4",
        "--threads",
        "1",
    ]);
    with(v, extra)
}

/// Asserts a clean refusal: exit 2, one `error:` line containing `needle`, no panic, and (when
/// given) `out` not created.
fn refused(o: &Output, what: &str, needle: &str, out: Option<&Path>) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{what}: exit {:?}\n{err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{what}: a panic\n{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains(needle)),
        "{what}: no `error:` line with {needle:?}\n{err}"
    );
    if let Some(out) = out {
        assert!(!out.exists(), "{what}: {} was created", out.display());
    }
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every numeric option of `train` (both networks) out of its range, each refused before any
/// file is written; the same base command with valid values trains.
#[test]
fn train_refuses_every_out_of_range_value_before_any_work() {
    let dir = tmpdir("train");
    let out = dir.join("out");
    // (options, what the error names)
    let deeplab: &[(&[&str], &str)] = &[
        (&["--crop", "0"], "--crop must be in 1..="),
        (&["--crop", "1000000"], "--crop must be in 1..="),
        (&["--batch", "0"], "--batch must be in 1..="),
        (&["--batch", "100000000"], "--batch must be in 1..="),
        (&["--iter-size", "0"], "--iter-size must be in 1..="),
        (&["--iters", "0"], "--iters must be at least 1, got 0"),
        (
            &["--iters", "18446744073709551615", "--batch", "2"],
            "too large",
        ),
        (
            &["--lr", "0"],
            "--lr (the learning rate) must be a positive",
        ),
        (
            &["--lr=-0.1"],
            "--lr (the learning rate) must be a positive",
        ),
        (
            &["--lr", "NaN"],
            "--lr (the learning rate) must be a positive",
        ),
        (
            &["--lr", "inf"],
            "--lr (the learning rate) must be a positive",
        ),
        (&["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (&["--momentum=-0.1"], "--momentum must be in [0, 1)"),
        (&["--momentum", "NaN"], "--momentum must be in [0, 1)"),
        (
            &["--weight-decay=-1"],
            "--weight-decay must be a number >= 0",
        ),
        (
            &["--weight-decay", "NaN"],
            "--weight-decay must be a number >= 0",
        ),
        (
            &["--poly-power", "inf"],
            "--poly-power must be a number >= 0",
        ),
        (&["--lr-step", "0"], "--lr-step must be at least 1, got 0"),
        (
            &["--save-every", "0"],
            "--save-every must be at least 1, got 0",
        ),
        (
            &["--scales", "0"],
            "--scales (the random training scales) must",
        ),
        (
            &["--scales=-1"],
            "--scales (the random training scales) must",
        ),
        (
            &["--scales", "0.5,NaN"],
            "--scales (the random training scales) must",
        ),
        (
            &["--scales", "100"],
            "--scales (the random training scales) must",
        ),
        (
            &["--num-classes", "0"],
            "--num-classes (classes, background included) must be in 2..=255",
        ),
        (
            &["--num-classes", "1"],
            "--num-classes (classes, background included) must be in 2..=255",
        ),
        (
            &["--num-classes", "256"],
            "--num-classes (classes, background included) must be in 2..=255",
        ),
        (
            &["--width", "0"],
            "--width (the stem width) must be in 1..=",
        ),
        (
            &["--width", "100000"],
            "--width (the stem width) must be in 1..=",
        ),
        (
            &["--blocks", "0,2,2,2"],
            "--blocks (bottlenecks per stage) must each be in 1..=",
        ),
        (
            &["--rates", "0"],
            "--rates (the ASPP rates) must each be in 1..=",
        ),
        (
            &["--rates", "6,100000"],
            "--rates (the ASPP rates) must each be in 1..=",
        ),
        (
            &["--msc-scales", "0"],
            "--msc-scales (the extra input scales) must each be in (0, 1]",
        ),
        (
            &["--msc-scales=-0.5"],
            "--msc-scales (the extra input scales) must each be in (0, 1]",
        ),
        (
            &["--msc-scales", "NaN"],
            "--msc-scales (the extra input scales) must each be in (0, 1]",
        ),
        (
            &["--msc-scales", "2"],
            "--msc-scales (the extra input scales) must each be in (0, 1]",
        ),
        (&["--threads", "0"], "--threads must be in 1..="),
        (&["--threads", "100000000"], "--threads must be in 1..="),
    ];
    for (extra, needle) in deeplab {
        let o = clip_es(&deeplab_args(&dir, &out, extra));
        refused(&o, &format!("deeplab-v2 {extra:?}"), needle, Some(&out));
    }
    let decoder: &[(&[&str], &str)] = &[
        (
            &["--hidden", "0"],
            "--hidden (the decoder width) must be in 1..=",
        ),
        (
            &["--hidden", "100000000"],
            "--hidden (the decoder width) must be in 1..=",
        ),
        (&["--upsamplings", "9"], "--upsamplings must be in 0..=4"),
        (
            &["--grid-crop", "0", "--batch", "2"],
            "--grid-crop 0 (whole feature maps",
        ),
        (&["--grid-crop", "100000"], "--grid-crop must be in 0..="),
        (&["--batch", "0"], "--batch must be in 1..="),
        (
            &["--lr", "NaN"],
            "--lr (the learning rate) must be a positive",
        ),
        (&["--iters", "0"], "--iters must be at least 1, got 0"),
    ];
    for (extra, needle) in decoder {
        let o = clip_es(&decoder_args(&dir, &out, extra));
        refused(&o, &format!("clip-decoder {extra:?}"), needle, Some(&out));
    }
    // The same commands with valid values train (so each refusal is the value's alone).
    ok(&clip_es(&deeplab_args(&dir, &out, &[])), "deeplab-v2");
    ok(
        &clip_es(&decoder_args(&dir, &dir.join("dec"), &[])),
        "clip-decoder",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A randomly initialised DeepLab-v2 diverges on real photos: without `--init` the command
/// says so up front; `--random-init` is the explicit opt-in.
#[test]
fn deeplab_v2_needs_init_weights_or_an_explicit_random_start() {
    let dir = tmpdir("init");
    let out = dir.join("out");
    let mut args = deeplab_args(&dir, &out, &[]);
    let at = args.iter().position(|a| a == "--init").unwrap();
    args.drain(at..at + 2);
    refused(
        &clip_es(&args),
        "no --init",
        "DeepLab-v2 needs initial weights: give --init",
        Some(&out),
    );
    args.push("--random-init".into());
    ok(&clip_es(&args), "--random-init");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loss that becomes NaN or infinite stops the run with the iteration and what to try, and no
/// checkpoint of a later iteration is written.
#[test]
fn a_diverging_loss_stops_with_the_iteration_and_a_hint() {
    let dir = tmpdir("nan");
    let out = dir.join("out");
    let o = clip_es(&deeplab_args(
        &dir,
        &out,
        &["--iters", "5", "--save-every", "1", "--lr", "1e30"],
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("at iteration") && err.contains("lower learning rate (--lr)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The iteration that diverged wrote nothing: every checkpoint left holds finite weights.
    let log = std::fs::read_to_string(out.join("train.jsonl")).unwrap_or_default();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["loss"].as_f64().is_some_and(f64::is_finite), "{line}");
    }
    assert!(!out.join("checkpoint-000005.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Masks in which every pixel is 255 give the loss nothing: an error naming the split, before
/// training.
#[test]
fn masks_without_a_confident_pixel_are_an_error_naming_the_split() {
    let dir = tmpdir("all255");
    let masks = dir.join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    for id in ["astronaut", "horse"] {
        let gt = clip_es::masks::read_label_png(&examples().join(format!("gt/{id}.png"))).unwrap();
        let png = clip_es::masks::encode_label_png(
            &vec![255u8; gt.labels.len()],
            gt.width,
            gt.height,
            false,
        )
        .unwrap();
        std::fs::write(masks.join(format!("{id}.png")), png).unwrap();
    }
    let out = dir.join("out");
    let mut args = deeplab_args(&dir, &out, &[]);
    let at = args.iter().position(|a| a == "--masks").unwrap();
    args[at + 1] = s(&masks);
    let o = clip_es(&args);
    refused(&o, "all-255 masks", "no confident pixel", None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("split.txt"), "{err}");
    assert!(!out.join("train.jsonl").exists(), "training started");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The files a run reports exist: resuming a finished run with the same `--iters` trains
/// nothing and names the checkpoint it resumed from; fewer iterations than the checkpoint's
/// are refused.
#[test]
fn a_run_reports_only_files_that_exist() {
    let dir = tmpdir("report");
    let a = dir.join("a");
    ok(
        &clip_es(&deeplab_args(
            &dir,
            &a,
            &["--iters", "2", "--save-every", "1"],
        )),
        "train",
    );
    let b = dir.join("b");
    let last = s(&a.join("checkpoint-000002.safetensors"));
    let o = clip_es(&deeplab_args(
        &dir,
        &b,
        &["--iters", "2", "--resume", &last],
    ));
    ok(&o, "resume with nothing to train");
    let err = String::from_utf8_lossy(&o.stderr);
    let done = err
        .lines()
        .find_map(|l| l.strip_prefix("done: "))
        .unwrap_or_else(|| panic!("no done line\n{err}"));
    let (checkpoint, rest) = done.split_once(" (log ").unwrap();
    let (log, curve) = rest.trim_end_matches(')').split_once(", curve ").unwrap();
    for f in [checkpoint, log, curve] {
        assert!(Path::new(f).is_file(), "reported {f} does not exist\n{err}");
    }
    assert!(b.join("final.safetensors").is_file());
    let o = clip_es(&deeplab_args(
        &dir,
        &dir.join("c"),
        &["--iters", "1", "--resume", &last],
    ));
    refused(
        &o,
        "resume beyond --iters",
        "is at iteration 2, beyond --iters 1",
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `predict`: scales outside [0.1, 4], and bad thread counts, are refused before the network is
/// loaded; a photo too small for the smallest scale fails alone, without a panic.
#[test]
fn predict_refuses_bad_scales_and_survives_tiny_photos() {
    let dir = tmpdir("predict");
    let train = dir.join("train");
    ok(&clip_es(&deeplab_args(&dir, &train, &[])), "train");
    let checkpoint = train.join("final.safetensors");
    let split = split(&dir);
    let out = dir.join("pred");
    let args = |extra: &[&str]| {
        let v = strings(&[
            "predict",
            "--checkpoint",
            &s(&checkpoint),
            "--images",
            &s(&examples().join("images")),
            "--split",
            &s(&split),
            "--out",
            &s(&out),
            "--threads",
            "1",
        ]);
        with(v, extra)
    };
    // A 5x5 photo at scale 0.1 has no pixel left: that photo fails with a message (exit 1),
    // never a panic, and the other one is written.
    let tiny_images = dir.join("tiny-images");
    std::fs::create_dir_all(&tiny_images).unwrap();
    std::fs::copy(
        examples().join("images/astronaut.jpg"),
        tiny_images.join("astronaut.jpg"),
    )
    .unwrap();
    {
        let file = std::fs::File::create(tiny_images.join("horse.png")).unwrap();
        let mut enc = png::Encoder::new(file, 5, 5);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .unwrap()
            .write_image_data(&[90u8; 75])
            .unwrap();
    }
    let mut tiny = args(&["--scales", "1.0,0.1"]);
    let at = tiny.iter().position(|a| a == "--images").unwrap();
    tiny[at + 1] = s(&tiny_images);
    let o = clip_es(&tiny);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("pixel"), "{err}");
    assert!(out.join("astronaut.png").is_file(), "{err}");
    let _ = std::fs::remove_dir_all(&out);
    for bad in ["0", "-1", "NaN", "inf", "1.0,0", "0.001", "100"] {
        let o = clip_es(&args(&[&format!("--scales={bad}")]));
        refused(
            &o,
            &format!("--scales {bad}"),
            "is not in [0.1, 4]",
            Some(&out),
        );
    }
    refused(
        &clip_es(&args(&["--threads", "0"])),
        "--threads 0",
        "--threads must be in 1..=",
        Some(&out),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The other commands' counts: zero or huge thread counts and zero repetitions are refused, not
/// clamped or spawned.
#[test]
fn other_commands_refuse_zero_and_huge_counts() {
    let dir = tmpdir("counts");
    let out = dir.join("cams");
    let o = clip_es(&strings(&[
        "bench",
        "--threads",
        "0",
        "--reps",
        "1",
        "--size",
        "16x16",
    ]));
    refused(&o, "bench --threads 0", "--threads must be in 1..=", None);
    let o = clip_es(&strings(&["bench", "--reps", "0", "--size", "16x16"]));
    refused(&o, "bench --reps 0", "--reps must be at least 1", None);
    for threads in ["0", "100000000"] {
        let o = clip_es(&strings(&[
            "cams",
            "--model",
            &s(&tiny_clip()),
            "--images",
            &s(&examples().join("images")),
            "--labels",
            &s(&examples().join("labels.txt")),
            "--out",
            &s(&out),
            "--threads",
            threads,
        ]));
        refused(
            &o,
            &format!("cams --threads {threads}"),
            "--threads must be in 1..=",
            Some(&out),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
