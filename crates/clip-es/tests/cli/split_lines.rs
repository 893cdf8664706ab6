//! Split files name images by plain ids or by deeplab-pytorch lines
//! (`/JPEGImages/<id>.jpg /SegmentationClass/<id>.png`), read by one reader
//! (`clip_es_data::split`) in every stage that takes `--split`: `cams`, `masks`, `eval`,
//! `train` and `predict` give the same outputs for both, and refuse a line without an image
//! name with the same message. (`segment` takes images, not split files.)

use std::path::Path;
use std::process::{Command, Output};

use super::common::{examples, s, tiny_clip};
use clip_es_testkit::TempDir;

fn clip_es(args: &[String]) -> Output {
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

/// The files `<id>.<ext>` of `dir`, with their bytes.
fn outputs(dir: &Path, ids: &[&str], ext: &str) -> Vec<Vec<u8>> {
    ids.iter()
        .map(|id| std::fs::read(dir.join(format!("{id}.{ext}"))).unwrap())
        .collect()
}

/// The losses of a training run's log.
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

/// The arguments of each stage that reads `split`, writing under `out`.
fn stages(split: &Path, out: &Path, cams: &Path, masks: &Path, ckpt: &Path) -> Vec<Vec<String>> {
    let images = s(&examples().join("images"));
    let strs = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        strs(&[
            "cams",
            "--model",
            &s(&tiny_clip()),
            "--images",
            &images,
            "--labels",
            &s(&examples().join("labels.txt")),
            "--split",
            &s(split),
            "--out",
            &s(&out.join("cams")),
            "--threads",
            "2",
        ]),
        strs(&[
            "masks",
            "--cams",
            &s(cams),
            "--images",
            &images,
            "--split",
            &s(split),
            "--out",
            &s(&out.join("masks")),
            "--threads",
            "2",
        ]),
        strs(&[
            "eval",
            "--masks",
            &s(masks),
            "--gt",
            &s(&examples().join("gt")),
            "--split",
            &s(split),
        ]),
        strs(&[
            "train",
            "--arch",
            "deeplab-v2",
            "--images",
            &images,
            "--masks",
            &s(masks),
            "--split",
            &s(split),
            "--out",
            &s(&out.join("train")),
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
            "--iters",
            "2",
            "--jobs",
            "2",
        ]),
        strs(&[
            "predict",
            "--checkpoint",
            &s(ckpt),
            "--images",
            &images,
            "--split",
            &s(split),
            "--out",
            &s(&out.join("predict")),
            "--jobs",
            "2",
        ]),
    ]
}

#[test]
fn deeplab_lines_and_plain_ids_give_the_same_outputs_in_every_stage() {
    let d = TempDir::new("same");
    let ids = ["astronaut", "camera"];
    let plain = d.path().join("plain.txt");
    std::fs::write(&plain, ids.join("\n")).unwrap();
    let deeplab = d.path().join("deeplab.txt");
    let lines: Vec<String> = ids
        .iter()
        .map(|id| format!("/JPEGImages/{id}.jpg /SegmentationClass/{id}.png"))
        .collect();
    std::fs::write(&deeplab, lines.join("\n")).unwrap();

    // Each stage runs on the plain split's inputs of the stage before it, so that only the
    // split differs between the two runs of a stage.
    let base = d.path().join("plain");
    let (cams, masks) = (base.join("cams"), base.join("masks"));
    let ckpt = base.join("train/final.safetensors");
    let mut eval_stdout = Vec::new();
    for (split, out) in [(&plain, &base), (&deeplab, &d.path().join("deeplab"))] {
        for (k, args) in stages(split, out, &cams, &masks, &ckpt)
            .into_iter()
            .enumerate()
        {
            let o = clip_es(&args);
            ok(&o, &format!("{} with {}", args[0], split.display()));
            if k == 2 {
                eval_stdout.push(String::from_utf8_lossy(&o.stdout).into_owned());
            }
        }
    }
    let other = d.path().join("deeplab");
    for (stage, ext) in [("cams", "npz"), ("masks", "png"), ("predict", "png")] {
        assert!(
            outputs(&base.join(stage), &ids, ext) == outputs(&other.join(stage), &ids, ext),
            "{stage}: the outputs of the two splits differ"
        );
    }
    assert_eq!(eval_stdout[0], eval_stdout[1], "eval");
    assert!(eval_stdout[0].contains("mIoU"), "{}", eval_stdout[0]);
    let (a, b) = (losses(&base.join("train")), losses(&other.join("train")));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "train: the losses of the two splits differ");
}

#[test]
fn a_line_without_an_image_name_is_refused_alike_by_every_stage() {
    let d = TempDir::new("refused");
    let split = d.path().join("bad.txt");
    std::fs::write(&split, "/JPEGImages/astronaut.jpg\n/JPEGImages/\n").unwrap();
    let missing = d.path().join("none");
    std::fs::create_dir_all(&missing).unwrap();
    let want = format!(
        "{}:2: `/JPEGImages/` is a path without a file name",
        split.display()
    );
    let ckpt = missing.join("final.safetensors");
    for args in stages(&split, &d.path().join("out"), &missing, &missing, &ckpt) {
        let o = clip_es(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", args[0]);
        assert!(err.contains(&want), "{}: {err}", args[0]);
    }
}
