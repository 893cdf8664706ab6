//! `clip-es eval` against the reference's `eval_cam.py` (CAMs, background exponents 1 and 2)
//! and `eval_cam_with_crf.py --eval_only` (CRF labels without the confidence threshold) on the
//! miniature dataset of tests/data/crf (figures in expected.json, made by tools/golden_crf.py),
//! plus JSON output, class files and per-image failures.

use clip_es_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/crf")
}

fn temp(name: &str) -> TempDir {
    TempDir::new(&format!("eval-{name}"))
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("expected.json")).unwrap()).unwrap()
}

fn clip_es(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap()
}

fn eval(
    source: &str,
    dir: &Path,
    gt: &Path,
    json: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let split = data().join("split.txt");
    let mut args = vec![
        "eval",
        source,
        dir.to_str().unwrap(),
        "--gt",
        gt.to_str().unwrap(),
        "--split",
        split.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = clip_es(&args);
    let doc = std::fs::read_to_string(json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (o, doc)
}

fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-12
}

#[test]
fn cam_miou_and_background_sweep_match_eval_cam_py() {
    let d = temp("cams");
    let json = d.join("r.json");
    let (o, doc) = eval(
        "--cams",
        &data().join("cams"),
        &data().join("gt"),
        &json,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = &expected()["cams"];
    for s in doc["sweep"].as_array().unwrap() {
        let t = format!("{}", s["bg_power"].as_f64().unwrap() as i64);
        assert!(
            close(&s["mean_iou"], &want["sweep"][&t]),
            "t = {t}: {} vs {}",
            s["mean_iou"],
            want["sweep"][&t]
        );
    }
    assert_eq!(
        doc["bg_power"].as_f64().unwrap(),
        want["best_bg_power"].as_f64().unwrap()
    );
    assert!(close(&doc["mean_iou"], &want["mean_iou"]));
    assert!(close(&doc["pixel_accuracy"], &want["pixel_accuracy"]));
    assert_eq!(doc["evaluated"], 5);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("best bg power: 1") && stdout.contains("background"),
        "{stdout}"
    );
    // Named classes appear with their IoU.
    let classes = doc["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 21);
    assert_eq!(classes[15]["name"], "person");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn crf_miou_matches_eval_cam_with_crf_py() {
    // eval_cam_with_crf.py --eval_only scores the CRF labels before the 0.95 threshold, i.e.
    // masks made with --confidence 0.
    let d = temp("crf");
    let masks = d.join("masks");
    let o = clip_es(&[
        "masks",
        "--cams",
        data().join("cams").to_str().unwrap(),
        "--images",
        data().join("images").to_str().unwrap(),
        "--split",
        data().join("split.txt").to_str().unwrap(),
        "--out",
        masks.to_str().unwrap(),
        "--confidence",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, doc) = eval(
        "--masks",
        &masks,
        &data().join("gt"),
        &d.join("r.json"),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = &expected()["crf"];
    assert!(
        close(&doc["mean_iou"], &want["mean_iou"]),
        "{} vs {}",
        doc["mean_iou"],
        want["mean_iou"]
    );
    assert!(close(&doc["pixel_accuracy"], &want["pixel_accuracy"]));
    assert_eq!(doc["unlabelled_pixels"], 0);

    // The thresholded masks have 255s: counted as misses by default, left out with --unlabelled skip.
    let (o, miss) = eval(
        "--masks",
        &data().join("expected_masks"),
        &data().join("gt"),
        &d.join("m.json"),
        &[],
    );
    assert!(o.status.success());
    let (_, skip) = eval(
        "--masks",
        &data().join("expected_masks"),
        &data().join("gt"),
        &d.join("s.json"),
        &["--unlabelled", "skip"],
    );
    assert!(miss["unlabelled_pixels"].as_u64().unwrap() > 0);
    assert!(skip["mean_iou"].as_f64().unwrap() >= miss["mean_iou"].as_f64().unwrap());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn class_file_and_coco_lists() {
    let d = temp("classes");
    let f = d.join("classes.txt");
    let names: Vec<String> = std::iter::once("background".to_string())
        .chain((1..=20).map(|i| format!("c{i}")))
        .collect();
    std::fs::write(&f, names.join("\n")).unwrap();
    let (o, doc) = eval(
        "--cams",
        &data().join("cams"),
        &data().join("gt"),
        &d.join("r.json"),
        &["--classes", f.to_str().unwrap()],
    );
    assert!(o.status.success());
    assert_eq!(doc["classes"][15]["name"], "c15");
    assert!(close(&doc["mean_iou"], &expected()["cams"]["mean_iou"]));
    // With COCO's 81 classes the VOC ground truth is still valid (values < 81).
    let (o, doc) = eval(
        "--cams",
        &data().join("cams"),
        &data().join("gt"),
        &d.join("c.json"),
        &["--classes", "coco"],
    );
    assert!(o.status.success());
    assert_eq!(doc["classes"].as_array().unwrap().len(), 81);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_ground_truth_is_reported_per_image() {
    let d = temp("bad");
    let gt = d.join("gt");
    std::fs::create_dir_all(&gt).unwrap();
    for id in ["mini_000", "mini_004"] {
        std::fs::copy(
            data().join(format!("gt/{id}.png")),
            gt.join(format!("{id}.png")),
        )
        .unwrap();
    }
    // mini_001: corrupt PNG; mini_002: an RGB PNG (wrong number of channels); mini_003: missing.
    std::fs::write(gt.join("mini_001.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let mut rgb = Vec::new();
    {
        let mut e = png::Encoder::new(&mut rgb, 80, 52);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header()
            .unwrap()
            .write_image_data(&vec![0u8; 80 * 52 * 3])
            .unwrap();
    }
    std::fs::write(gt.join("mini_002.png"), rgb).unwrap();
    // mini_004's ground truth replaced by one of another size.
    std::fs::copy(data().join("gt/mini_000.png"), gt.join("mini_004.png")).unwrap();
    let (o, doc) = eval("--cams", &data().join("cams"), &gt, &d.join("r.json"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let tail = &err[err.find("failed images").expect(&err)..];
    assert!(
        tail.contains("mini_001.png") && tail.contains("PNG"),
        "{tail}"
    );
    assert!(
        tail.contains("mini_002.png") && tail.contains("3 channels"),
        "{tail}"
    );
    assert!(tail.contains("mini_003.png"), "{tail}");
    assert!(
        tail.contains("mini_004") && tail.contains("70x39 but the ground truth 64x48"),
        "{tail}"
    );
    assert_eq!(doc["evaluated"], 1);
    assert_eq!(doc["failed"].as_array().unwrap().len(), 4);
    std::fs::remove_dir_all(&d).unwrap();
}
