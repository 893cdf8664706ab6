//! `clip-es train` / `predict` / `run --train` end to end on the four example images (CI smoke
//! test, tiny widths, flex CPU backend): each architecture trains 30 iterations on the project's
//! own pseudo masks (`clip-es run` with the tiny random CLIP: CAMs, CRF, 255 where the CRF is not
//! confident), the loss at least halves, resuming from a checkpoint reproduces the uninterrupted
//! run bit for bit, and predict (plain, with the CRF, with overlays) + eval run on the result.
//! `run --train` chains all stages and resumes. Bad masks are clear errors naming the file.

use super::common::{examples, tiny_clip};
use clip_es_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("train-{tag}"))
}

fn clip_es(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const IDS: [&str; 4] = ["astronaut", "camera", "chelsea", "horse"];

/// The pseudo masks of the examples, made by the pipeline itself (`clip-es run`: CAMs of the
/// tiny random CLIP, CRF, 255 below the 0.95 confidence) once per test binary, copied into
/// `dir/masks` for each test (a test may damage its copy), and the split of their ids.
fn pseudo_masks(dir: &Path) -> (PathBuf, PathBuf) {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    let made = MADE.get_or_init(make_pseudo_masks);
    let masks = dir.join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    for entry in std::fs::read_dir(made).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), masks.join(entry.file_name())).unwrap();
        }
    }
    let split = dir.join("split.txt");
    std::fs::write(&split, IDS.join("\n")).unwrap();
    (masks, split)
}

/// Runs `clip-es run` once into the test target's own temporary directory (kept by cargo under
/// `target/`, not removed at exit: a static is never dropped) and returns its masks folder.
fn make_pseudo_masks() -> PathBuf {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-cli-pseudo-masks");
    let _ = std::fs::remove_dir_all(&run);
    ok(
        &clip_es(&[
            "run",
            "--model",
            &s(&tiny_clip()),
            "--images",
            &s(&examples().join("images")),
            "--labels",
            &s(&examples().join("labels.txt")),
            "--out",
            &s(&run),
            "--threads",
            "2",
        ]),
        "run (pseudo masks)",
    );
    let masks = run.join("masks");
    let mut unconfident = 0;
    for id in IDS {
        let m = clip_es::masks::read_label_png(&masks.join(format!("{id}.png"))).unwrap();
        unconfident += m.labels.iter().filter(|&&v| v == 255).count();
    }
    // The CRF's confidence cut leaves pixels for the loss to ignore.
    assert!(unconfident > 0, "no unconfident pixels in the pseudo masks");
    masks
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn check_run(dir: &Path, arch: &str, extra: &[&str]) {
    let (masks, split) = pseudo_masks(dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let images = s(&examples().join("images"));
    let out_a = dir.join("a");
    let mut base: Vec<String> = [
        "train",
        "--arch",
        arch,
        "--images",
        &images,
        "--masks",
        &s(&masks),
        "--split",
        &s(&split),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    base.extend(extra.iter().map(|x| x.to_string()));
    base.extend(["--iters", "30", "--save-every", "10", "--jobs", "2"].map(String::from));
    let args = |out: &Path, more: &[&str]| -> Vec<String> {
        let mut v = base.clone();
        v.extend(["--out".to_string(), s(out)]);
        v.extend(more.iter().map(|x| x.to_string()));
        v
    };
    let a = args(&out_a, &[]);
    ok(
        &clip_es(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        "train",
    );
    let l = losses(&out_a);
    assert_eq!(l.len(), 30);
    let (first, last) = (mean(&l[..3]), mean(&l[27..]));
    eprintln!("{arch}: loss {first:.4} -> {last:.4}");
    assert!(
        last <= first / 2.0,
        "{arch}: loss did not halve: {first} -> {last} ({l:?})"
    );
    for f in [
        "loss.png",
        "final.safetensors",
        "checkpoint-000010.safetensors",
        "checkpoint-000030.safetensors",
    ] {
        assert!(out_a.join(f).is_file(), "{f} missing");
    }

    // Resume from iteration 20 in another directory: the same checkpoint at 30, byte for byte.
    let out_b = dir.join("b");
    std::fs::create_dir_all(&out_b).unwrap();
    std::fs::copy(
        out_a.join("checkpoint-000020.safetensors"),
        out_b.join("checkpoint-000020.safetensors"),
    )
    .unwrap();
    let b = args(&out_b, &["--resume"]);
    ok(
        &clip_es(&b.iter().map(String::as_str).collect::<Vec<_>>()),
        "resume",
    );
    let (ca, cb) = (
        std::fs::read(out_a.join("checkpoint-000030.safetensors")).unwrap(),
        std::fs::read(out_b.join("checkpoint-000030.safetensors")).unwrap(),
    );
    assert!(
        ca == cb,
        "{arch}: the resumed run differs from the uninterrupted one"
    );
    assert_eq!(losses(&out_b), l[20..].to_vec());

    // Predict (plain, and with the CRF and overlays) and score against the ground truth.
    for (tag, more) in [
        ("pred", &[][..]),
        ("pred-crf", &["--crf", "--overlays"][..]),
    ] {
        let pred = dir.join(tag);
        let mut args = vec![
            "predict".to_string(),
            "--checkpoint".into(),
            s(&out_a.join("final.safetensors")),
            "--images".into(),
            images.clone(),
            "--split".into(),
            s(&split),
            "--out".into(),
            s(&pred),
            "--jobs".into(),
            "2".into(),
        ];
        for m in more {
            args.push(m.to_string());
            if *m == "--overlays" {
                args.push(s(&dir.join(format!("{tag}-overlays"))));
            }
        }
        ok(
            &clip_es(&args.iter().map(String::as_str).collect::<Vec<_>>()),
            tag,
        );
        for id in IDS {
            let m = clip_es::masks::read_label_png(&pred.join(format!("{id}.png"))).unwrap();
            let g =
                clip_es::masks::read_label_png(&examples().join(format!("gt/{id}.png"))).unwrap();
            assert_eq!((m.width, m.height), (g.width, g.height));
            assert!(
                m.labels.iter().all(|&v| v < 21),
                "{tag}/{id}: labels out of range"
            );
            if !more.is_empty() {
                let o = dir.join(format!("{tag}-overlays/{id}.png"));
                assert!(o.is_file(), "{} missing", o.display());
            }
        }
        let e = clip_es(&[
            "eval",
            "--masks",
            &s(&pred),
            "--gt",
            &s(&examples().join("gt")),
            "--split",
            &s(&split),
        ]);
        ok(&e, "eval");
        eprintln!("{tag}: {}", String::from_utf8_lossy(&e.stdout));
    }
}

#[test]
fn deeplab_v2_trains_resumes_and_predicts() {
    let dir = tmpdir("deeplab");
    check_run(
        &dir,
        "deeplab-v2",
        &[
            "--random-init",
            "--width",
            "4",
            "--blocks",
            "1,1,1,1",
            "--batch",
            "2",
            "--iter-size",
            "1",
            "--crop",
            "97",
            "--scales",
            "0.25,0.3",
            "--lr",
            "0.00001",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clip_decoder_trains_resumes_and_predicts() {
    let dir = tmpdir("decoder");
    let model = tiny_clip();
    check_run(
        &dir,
        "clip-decoder",
        &[
            "--model",
            model.to_str().unwrap(),
            "--hidden",
            "32",
            "--batch",
            "2",
            "--iter-size",
            "1",
            "--grid-crop",
            "12",
            "--lr",
            "0.05",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_masks_are_errors_naming_the_file() {
    let dir = tmpdir("bad");
    let (masks, split) = pseudo_masks(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let images = s(&examples().join("images"));
    let run = |out: &str| {
        clip_es(&[
            "train",
            "--arch",
            "deeplab-v2",
            "--images",
            &images,
            "--masks",
            &s(&masks),
            "--split",
            &s(&split),
            "--out",
            &s(&dir.join(out)),
            "--iters",
            "1",
            "--random-init",
            "--width",
            "2",
            "--blocks",
            "1,1,1,1",
        ])
    };
    // a class id above the class count
    let bad = masks.join("horse.png");
    let m = clip_es::masks::read_label_png(&bad).unwrap();
    let mut l = m.labels.clone();
    l[5] = 30;
    std::fs::write(
        &bad,
        clip_es::masks::encode_label_png(&l, m.width, m.height, true).unwrap(),
    )
    .unwrap();
    let o = run("o1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("horse.png") && err.contains("label 30"),
        "{err}"
    );
    // a mask whose size differs from its image
    std::fs::write(
        &bad,
        clip_es::masks::encode_label_png(&[0u8; 12], 4, 3, false).unwrap(),
    )
    .unwrap();
    let o = run("o2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("horse.png") && err.contains("differs from its image"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --train clip-decoder`: CAMs, masks, training, predictions (CRF, overlays) and three
/// evaluations in one command; a rerun with more iterations resumes the training from its last
/// checkpoint and rewrites the now stale predictions.
#[test]
fn run_with_training_stage_predicts_evaluates_and_resumes() {
    let dir = tmpdir("run-train");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = dir.join("out");
    let run = |iters: &str| {
        clip_es(&[
            "run",
            "--model",
            &s(&tiny_clip()),
            "--images",
            &s(&examples().join("images")),
            "--labels",
            &s(&examples().join("labels.txt")),
            "--gt",
            &s(&examples().join("gt")),
            "--out",
            &s(&out),
            "--threads",
            "2",
            "--train",
            "clip-decoder",
            "--train-iters",
            iters,
            "--train-batch",
            "2",
            "--train-save-every",
            "5",
            "--predict-crf",
            "--overlays",
        ])
    };
    let o = run("10");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for id in IDS {
        for sub in ["masks", "predictions", "prediction-overlays"] {
            let p = out.join(format!("{sub}/{id}.png"));
            assert!(p.is_file(), "{} missing", p.display());
        }
    }
    assert!(out.join("train/checkpoint-000010.safetensors").is_file());
    assert!(out.join("train/final.safetensors").is_file());
    // Three evaluations: CAMs, masks, predictions (each ends with its `mIoU` line).
    assert!(
        stderr.contains("== evaluation of the predictions"),
        "{stderr}"
    );
    let summaries = stdout.lines().filter(|l| l.starts_with("mIoU ")).count();
    assert_eq!(summaries, 3, "{stdout}");
    let stamp = |p: &str| std::fs::metadata(out.join(p)).unwrap().modified().unwrap();
    let (mask_time, pred_time) = (stamp("masks/horse.png"), stamp("predictions/horse.png"));
    std::thread::sleep(std::time::Duration::from_millis(20));

    // A rerun with more iterations resumes at 10 and refreshes the predictions.
    let o = run("15");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("at iteration 10"), "{stderr}");
    assert!(out.join("train/checkpoint-000015.safetensors").is_file());
    let log = std::fs::read_to_string(out.join("train/train.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 15);
    assert_eq!(
        stamp("masks/horse.png"),
        mask_time,
        "finished masks are kept"
    );
    assert!(
        stamp("predictions/horse.png") > pred_time,
        "stale predictions were kept"
    );

    // A rerun with other settings of the masks, the training and the predictions is refused
    // before any work, naming every differing setting; nothing is touched.
    let snapshot = |sub: &str| std::fs::read(out.join(sub)).unwrap();
    let kept = [
        "masks/horse.png",
        "train/final.safetensors",
        "predictions/horse.png",
    ]
    .map(|f| (f, snapshot(f)));
    let o = clip_es(&[
        "run",
        "--model",
        &s(&tiny_clip()),
        "--images",
        &s(&examples().join("images")),
        "--labels",
        &s(&examples().join("labels.txt")),
        "--gt",
        &s(&examples().join("gt")),
        "--out",
        &s(&out),
        "--threads",
        "2",
        "--train",
        "clip-decoder",
        "--train-iters",
        "15",
        "--train-batch",
        "2",
        "--train-save-every",
        "5",
        "--overlays",
        "--confidence",
        "0.5",
        "--train-lr",
        "0.02",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(2), "{stdout}\n{stderr}");
    for want in [
        "confidence: 0.95 -> 0.5",
        "lr: 0.01 -> 0.02",
        "crf: 10 iterations, gaussian sxy 1 weight 3, bilateral sxy 67 srgb 3 weight 4 -> off",
        "--overwrite",
    ] {
        assert!(stderr.contains(want), "`{want}` not in: {stderr}");
    }
    assert!(
        !stdout.contains("mIoU"),
        "an old evaluation was printed: {stdout}"
    );
    assert!(!stderr.contains("== CAMs"), "work started: {stderr}");
    for (f, bytes) in &kept {
        assert!(snapshot(f) == *bytes, "{f} changed");
    }

    // `predict` into the same folder with another checkpoint: refused, the maps kept.
    let o = clip_es(&[
        "predict",
        "--checkpoint",
        &s(&out.join("train/checkpoint-000010.safetensors")),
        "--images",
        &s(&examples().join("images")),
        "--split",
        &s(&out.join("train/split.txt")),
        "--out",
        &s(&out.join("predictions")),
        "--crf",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("checkpoint: "), "{stderr}");
    assert!(snapshot("predictions/horse.png") == kept[2].1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new `train` into a folder that holds a run is refused (the old checkpoints would mix with
/// the new run's); `--overwrite` clears the old run first. `--resume` refuses another
/// architecture, skips a truncated latest checkpoint with a warning, and removes the temporary
/// files of a checkpoint write cut short.
#[test]
fn train_never_mixes_runs_and_resumes_past_broken_files() {
    let dir = tmpdir("rerun");
    let (masks, split) = pseudo_masks(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let images = s(&examples().join("images"));
    let out = dir.join("o");
    let train = |more: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--images",
            &images,
            "--masks",
            &s(&masks),
            "--split",
            &s(&split),
            "--out",
            &s(&out),
            "--width",
            "2",
            "--blocks",
            "1,1,1,1",
            "--batch",
            "1",
            "--iter-size",
            "1",
            "--crop",
            "65",
            "--save-every",
            "2",
            "--random-init",
            "--jobs",
            "2",
        ]
        .map(String::from)
        .to_vec();
        a.extend(more.iter().map(|x| x.to_string()));
        clip_es(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let log_iters = || -> Vec<u64> {
        std::fs::read_to_string(out.join("train.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["iter"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    ok(&train(&["--arch", "deeplab-v2", "--iters", "4"]), "train");
    assert_eq!(log_iters(), [1, 2, 3, 4]);
    let final_bytes = std::fs::read(out.join("final.safetensors")).unwrap();

    // Again without --resume: refused before any work, nothing replaced.
    let o = train(&["--arch", "deeplab-v2", "--iters", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already holds a training run") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(log_iters(), [1, 2, 3, 4]);
    assert!(std::fs::read(out.join("final.safetensors")).unwrap() == final_bytes);

    // --overwrite: the old run's checkpoints go, the new run is alone in the folder.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok(
        &train(&["--arch", "deeplab-v2", "--iters", "3", "--overwrite"]),
        "train --overwrite",
    );
    assert!(!out.join("checkpoint-000004.safetensors").exists());
    assert!(out.join("checkpoint-000003.safetensors").is_file());
    assert!(
        out.join("notes.txt").is_file(),
        "a file train did not write was removed"
    );
    assert_eq!(log_iters(), [1, 2, 3]);

    // Resuming as another architecture is refused, naming both.
    let o = train(&["--arch", "clip-decoder", "--resume", "--iters", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("deeplab-v2 checkpoint") && err.contains("clip-decoder"),
        "{err}"
    );

    // A truncated latest checkpoint and a stale temporary file: the run resumes from the
    // previous checkpoint with a warning naming the broken one, and the temporary file goes.
    let latest = out.join("checkpoint-000003.safetensors");
    let bytes = std::fs::read(&latest).unwrap();
    std::fs::write(&latest, &bytes[..bytes.len() / 2]).unwrap();
    // (the temporary name every writer uses: `.{final name}.{pid}.partial`)
    let part = out.join(".checkpoint-000004.safetensors.4242.partial");
    std::fs::write(&part, &bytes[..100]).unwrap();
    let o = train(&["--arch", "deeplab-v2", "--resume", "--iters", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("checkpoint-000003.safetensors")
            && err.contains("checkpoint-000002.safetensors"),
        "{err}"
    );
    assert!(!part.exists(), "a stale partial checkpoint was left");
    assert_eq!(log_iters(), [1, 2, 3, 4]);
    assert!(out.join("checkpoint-000004.safetensors").is_file());

    // A legend with fewer names than the network's classes is refused, naming both counts.
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, "cat\ndog\n").unwrap();
    let o = clip_es(&[
        "predict",
        "--checkpoint",
        &s(&out.join("final.safetensors")),
        "--images",
        &images,
        "--split",
        &s(&split),
        "--out",
        &s(&dir.join("pred")),
        "--overlays",
        &s(&dir.join("pred-overlays")),
        "--classes",
        &s(&classes),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("21 classes") && err.contains("only 2"),
        "{err}"
    );

    // Four stages of zero bottlenecks: the message says what is wrong.
    let o = clip_es(&[
        "train",
        "--arch",
        "deeplab-v2",
        "--random-init",
        "--images",
        &images,
        "--masks",
        &s(&masks),
        "--split",
        &s(&split),
        "--out",
        &s(&dir.join("zero-blocks")),
        "--iters",
        "1",
        "--width",
        "2",
        "--blocks",
        "0,0,0,0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--blocks") && !err.contains("four numbers"),
        "{err}"
    );

    // An --out that is a file: the same message as every other stage, nothing trained.
    let afile = dir.join("afile");
    std::fs::write(&afile, b"mine").unwrap();
    let o = clip_es(&[
        "train",
        "--arch",
        "deeplab-v2",
        "--random-init",
        "--images",
        &images,
        "--masks",
        &s(&masks),
        "--split",
        &s(&split),
        "--out",
        &s(&afile),
        "--iters",
        "1",
        "--width",
        "2",
        "--blocks",
        "1,1,1,1",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("must be a folder, not a file"), "{err}");
    assert_eq!(std::fs::read(&afile).unwrap(), b"mine");
    let _ = std::fs::remove_dir_all(&dir);
}
