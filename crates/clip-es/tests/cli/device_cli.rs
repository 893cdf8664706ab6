//! `--device` of `clip-es train`, `predict`, `cams`, `segment` and `run`: each run names the device it
//! computes on on its first line (`device: ...`, the adapter's own name for a GPU); a device
//! this build or machine lacks is an `error:` naming `--device` and what to build or install
//! (exit 2, before any output is written). With the `vulkan` feature, a tiny DeepLab-v2 trains
//! on the example photos on the Vulkan device as on `flex` (losses and weights within float
//! tolerance) and predicts the same label maps.

use super::common::{examples, s, tiny_clip};
use clip_es_testkit::TempDir;
use std::path::Path;
use std::process::{Command, Output};

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("device-{tag}"))
}

fn clip_es(args: &[String], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-es"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const IDS: [&str; 4] = ["astronaut", "camera", "chelsea", "horse"];

/// `train` of a tiny random DeepLab-v2 on the examples (their ground truth as the masks) for
/// two iterations on `device`, into `out`.
fn train_args(dir: &Path, out: &Path, device: &str) -> Vec<String> {
    let split = dir.join("split.txt");
    std::fs::write(&split, IDS.join("\n")).unwrap();
    [
        "train",
        "--arch",
        "deeplab-v2",
        "--images",
        &s(&examples().join("images")),
        "--masks",
        &s(&examples().join("gt")),
        "--split",
        &s(&split),
        "--out",
        &s(out),
        "--random-init",
        "--width",
        "2",
        "--blocks",
        "1,1,1,1",
        "--rates",
        "2,4",
        "--crop",
        "65",
        "--batch",
        "2",
        "--iter-size",
        "1",
        "--iters",
        "2",
        "--lr",
        "1e-3",
        "--jobs",
        "2",
        "--device",
        device,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn predict_args(dir: &Path, checkpoint: &Path, out: &Path, device: &str) -> Vec<String> {
    [
        "predict",
        "--checkpoint",
        &s(checkpoint),
        "--images",
        &s(&examples().join("images")),
        "--split",
        &s(&dir.join("split.txt")),
        "--out",
        &s(out),
        "--jobs",
        "2",
        "--device",
        device,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

/// A bad device is refused before any work: exit 2, one `error:` line naming `--device` and
/// the `hint`, no panic, no output folder.
fn refused(o: &Output, out: &Path, hint: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr:\n{e}");
    assert!(
        e.contains("error: ") && e.contains("--device vulkan") && e.contains(hint),
        "stderr:\n{e}"
    );
    assert!(!e.contains("panicked"), "a panic reached the user:\n{e}");
    assert!(!out.exists(), "{} was created", out.display());
}

#[test]
fn device_is_named_on_the_first_line_and_unknown_ones_are_refused() {
    let dir = tmpdir("flex");
    let out = dir.join("train");
    let o = clip_es(&train_args(&dir, &out, "cpu"), &[]);
    let e = stderr(&o);
    assert!(o.status.success(), "train failed:\n{e}");
    assert_eq!(e.lines().next(), Some("device: flex (CPU)"), "stderr:\n{e}");

    let bad = dir.join("bad");
    let o = clip_es(&train_args(&dir, &bad, "tpu"), &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{e}");
    assert!(e.contains("--device `tpu`") && e.contains("vulkan"), "{e}");
    assert!(!bad.exists());
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_in_a_build_without_the_feature_says_how_to_build_it() {
    let dir = tmpdir("nofeature");
    let hint = "--features vulkan";
    let out = dir.join("train");
    refused(&clip_es(&train_args(&dir, &out, "vulkan"), &[]), &out, hint);
    let out = dir.join("pred");
    let ckpt = dir.join("none.safetensors");
    let o = clip_es(&predict_args(&dir, &ckpt, &out, "vulkan"), &[]);
    refused(&o, &out, hint);
    let out = dir.join("run-train");
    let mut run = cam_args("run", &out, "vulkan");
    run.extend(["--train".into(), "clip-decoder".into()]);
    refused(&clip_es(&run, &[]), &out, hint);
    for command in ["cams", "segment", "run"] {
        let out = dir.join(command);
        refused(
            &clip_es(&cam_args(command, &out, "vulkan"), &[]),
            &out,
            hint,
        );
    }
}

/// `run --device` chooses the CAMs' device too, names it first, and refuses an unknown one
/// before any work.
#[test]
fn run_names_its_device_and_refuses_unknown_ones() {
    let dir = tmpdir("run");
    let out = dir.join("run");
    let mut args = cam_args("run", &out, "tpu");
    let o = clip_es(&args, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{e}");
    assert!(e.contains("--device tpu"), "{e}");
    assert!(!out.exists());
    args.pop();
    args.push("flex".into());
    args.extend([
        "--max-side".into(),
        "96".into(),
        "--threads".into(),
        "1".into(),
    ]);
    let o = clip_es(&args, &[]);
    let e = stderr(&o);
    assert!(o.status.success(), "stderr:\n{e}");
    assert_eq!(e.lines().next(), Some("device: flex (CPU)"), "{e}");
    assert!(out.join("masks").is_dir());
}

/// A machine without any Vulkan driver: the loader is pointed at a driver list that does not
/// exist, so that it finds no device even where one is installed.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_without_a_driver_says_what_to_install() {
    let dir = tmpdir("nodriver");
    let none = s(&dir.join("no-such-icd.json"));
    let runtime = dir.join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let env = [
        ("VK_ICD_FILENAMES", none.clone()),
        ("VK_DRIVER_FILES", none),
        ("XDG_RUNTIME_DIR", s(&runtime)),
    ];
    let hint = "mesa-vulkan-drivers";
    let out = dir.join("train");
    refused(
        &clip_es(&train_args(&dir, &out, "vulkan"), &env),
        &out,
        hint,
    );
    let out = dir.join("pred");
    let ckpt = dir.join("none.safetensors");
    let o = clip_es(&predict_args(&dir, &ckpt, &out, "vulkan"), &env);
    refused(&o, &out, hint);
    for command in ["cams", "segment", "run"] {
        let out = dir.join(command);
        let o = clip_es(&cam_args(command, &out, "vulkan"), &env);
        refused(&o, &out, hint);
    }
}

/// `cams`, `segment` or `run` (no stage three) of the tiny CLIP on the example photos.
fn cam_args(command: &str, out: &Path, device: &str) -> Vec<String> {
    let model = s(&tiny_clip());
    let mut args = vec![command.to_string()];
    if command == "segment" {
        args.extend([
            s(&examples().join("images")),
            "--classes".into(),
            "cat".into(),
        ]);
    } else {
        args.extend([
            "--images".into(),
            s(&examples().join("images")),
            "--labels".into(),
            s(&examples().join("labels.txt")),
        ]);
    }
    args.extend(["--model".into(), model, "--out".into(), s(out)]);
    args.extend(["--device".into(), device.into()]);
    args
}

#[cfg(feature = "vulkan")]
fn safetensors(p: &Path) -> std::collections::BTreeMap<String, clip_es_train::params::HostTensor> {
    clip_es_train::params::read_safetensors(p).unwrap().0
}

#[cfg(feature = "vulkan")]
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

/// Two training iterations and the label maps on the Vulkan device against `flex`: losses to
/// 1e-5 relative, weights to 1e-5 plus 1e-3 of the tensor's largest value (two steps of f32
/// gradients summed in another order), label maps of the same checkpoint identical.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_train_and_predict_on_the_examples_equal_flex() {
    let dir = tmpdir("vulkan");
    let mut ckpt = Vec::new();
    let mut loss = Vec::new();
    for device in ["flex", "vulkan"] {
        let out = dir.join(format!("train-{device}"));
        let o = clip_es(&train_args(&dir, &out, device), &[]);
        let e = stderr(&o);
        assert!(o.status.success(), "train on {device} failed:\n{e}");
        let first = e.lines().next().unwrap_or_default().to_string();
        eprintln!("train --device {device}: {first}");
        assert!(first.starts_with(&format!("device: {device} (")), "{e}");
        loss.push(losses(&out));
        ckpt.push(out.join("final.safetensors"));
    }
    assert_eq!(loss[0].len(), 2);
    for (f, g) in loss[0].iter().zip(&loss[1]) {
        assert!(((g - f) / f).abs() <= 1e-5, "loss: vulkan {g} vs flex {f}");
    }
    let (wf, wg) = (safetensors(&ckpt[0]), safetensors(&ckpt[1]));
    assert_eq!(wf.keys().collect::<Vec<_>>(), wg.keys().collect::<Vec<_>>());
    for (k, t) in &wf {
        let scale = t.data.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in wg[k].data.iter().zip(&t.data) {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-3 * scale,
                "{k}: vulkan {a} vs flex {b}"
            );
        }
    }

    let mut maps = Vec::new();
    for device in ["flex", "vulkan"] {
        let out = dir.join(format!("pred-{device}"));
        let o = clip_es(&predict_args(&dir, &ckpt[0], &out, device), &[]);
        let e = stderr(&o);
        assert!(o.status.success(), "predict on {device} failed:\n{e}");
        assert!(e.starts_with(&format!("device: {device} (")), "{e}");
        maps.push(
            IDS.map(|id| clip_es::masks::read_label_png(&out.join(format!("{id}.png"))).unwrap()),
        );
    }
    for (id, (f, g)) in IDS.iter().zip(maps[0].iter().zip(&maps[1])) {
        assert_eq!((f.width, f.height), (g.width, g.height), "{id}");
        let differ = f
            .labels
            .iter()
            .zip(&g.labels)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "{id}: {differ} labels differ");
    }
}
