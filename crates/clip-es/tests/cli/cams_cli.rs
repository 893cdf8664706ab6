//! `clip-es cams` end to end on the tiny random 10-block model: each label source, each
//! bad-input case, reruns, shards and a killed run.

use clip_es::cam_files::CamFile;
use clip_es_testkit::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("../clip-es-model/tests/fixtures/tiny-deep-hf")
}

fn example(name: &str) -> PathBuf {
    root().join("../../examples/images").join(name)
}

fn tmpdir(tag: &str) -> TempDir {
    TempDir::new(&format!("cams-{tag}"))
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn voc_xml(names: &[&str]) -> String {
    let objects: String = names
        .iter()
        .map(|n| format!("<object><name>{n}</name><difficult>0</difficult></object>"))
        .collect();
    format!("<annotation><size><width>1</width><height>1</height></size>{objects}</annotation>")
}

fn cams(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .arg("cams")
        .args(["--model", model().to_str().unwrap(), "--threads", "1"])
        .args(args)
        .output()
        .unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn check_file(path: &Path, keys: &[i64], size: (usize, usize)) {
    let f = CamFile::read(path).unwrap();
    assert_eq!(f.keys, keys, "{}", path.display());
    assert_eq!((f.height, f.width), size, "{}", path.display());
    assert_eq!(f.attn_highres.len(), keys.len() * size.0 * size.1);
    for k in 0..keys.len() {
        let map = &f.attn_highres[k * size.0 * size.1..(k + 1) * size.0 * size.1];
        let max = map.iter().map(|v| v.to_f32()).fold(f32::MIN, f32::max);
        let min = map.iter().map(|v| v.to_f32()).fold(f32::MAX, f32::min);
        assert!(
            min >= 0.0 && max <= 1.0,
            "{}: values in [{min}, {max}]",
            path.display()
        );
    }
}

#[test]
fn voc_annotations_give_distinct_labels_in_order() {
    let d = tmpdir("voc");
    std::fs::create_dir_all(d.join("JPEGImages")).unwrap();
    std::fs::copy(example("chelsea.jpg"), d.join("JPEGImages/a.jpg")).unwrap();
    std::fs::copy(example("camera.jpg"), d.join("JPEGImages/b.jpg")).unwrap();
    write(
        &d.join("Annotations/a.xml"),
        voc_xml(&["cat", "person", "cat"]),
    );
    write(&d.join("Annotations/b.xml"), voc_xml(&["person"]));
    write(&d.join("train.txt"), "a\nb\n");
    let o = cams(&[
        "--dataset",
        "voc",
        "--images",
        d.join("JPEGImages").to_str().unwrap(),
        "--annotations",
        d.join("Annotations").to_str().unwrap(),
        "--split",
        d.join("train.txt").to_str().unwrap(),
        "--out",
        d.join("out").to_str().unwrap(),
        "--save-unrefined",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The default device, named on the first line as every `--device` command does.
    assert_eq!(
        stderr(&o).lines().next(),
        Some("device: cpu (clip-es kernels)"),
        "{}",
        stderr(&o)
    );
    check_file(&d.join("out/a.npz"), &[7, 14], (300, 451));
    check_file(&d.join("out/b.npz"), &[14], (512, 512));
    assert!(CamFile::read(&d.join("out/a.npz"))
        .unwrap()
        .highres
        .is_some());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn split_labels_label_files_and_class_files() {
    let d = tmpdir("split");
    std::fs::copy(example("chelsea.jpg"), d.join("a.jpg")).unwrap();
    std::fs::copy(example("horse.jpg"), d.join("b.jpg")).unwrap();
    // COCO-style split: indices or names after the id.
    write(&d.join("split.txt"), "a 7 person\nb horse\n");
    let o = cams(&[
        "--images",
        d.to_str().unwrap(),
        "--split",
        d.join("split.txt").to_str().unwrap(),
        "--out",
        d.join("o1").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_file(&d.join("o1/a.npz"), &[7, 14], (300, 451));
    check_file(&d.join("o1/b.npz"), &[12], (328, 400));
    // A custom dataset: class file, label file, no split.
    write(
        &d.join("classes.txt"),
        "# custom\ncat\nperson: person with clothes,people,human\n",
    );
    write(&d.join("labels.txt"), "a person cat\n");
    let o = cams(&[
        "--dataset",
        d.join("classes.txt").to_str().unwrap(),
        "--images",
        d.to_str().unwrap(),
        "--labels",
        d.join("labels.txt").to_str().unwrap(),
        "--out",
        d.join("o2").to_str().unwrap(),
        "--background",
        "none",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_file(&d.join("o2/a.npz"), &[1, 0], (300, 451));
    assert!(!d.join("o2/b.npz").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

fn tiny_png(path: &Path, w: u32, h: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Rgb);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(&vec![128u8; (w * h * 3) as usize])
        .unwrap();
}

#[test]
fn bad_inputs_fail_per_image_and_the_run_goes_on() {
    let d = tmpdir("bad");
    let img = d.join("JPEGImages");
    let ann = d.join("Annotations");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("good.jpg")).unwrap();
    write(&ann.join("good.xml"), voc_xml(&["cat"]));
    write(&ann.join("missing.xml"), voc_xml(&["cat"])); // no image
    write(
        &img.join("corrupt.jpg"),
        b"\xff\xd8\xff\xe0 this is not a jpeg",
    );
    write(&ann.join("corrupt.xml"), voc_xml(&["cat"]));
    std::fs::copy(example("chelsea.jpg"), img.join("noxml.jpg")).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("badxml.jpg")).unwrap();
    write(
        &ann.join("badxml.xml"),
        "<annotation><object><name>cat</name></object>",
    );
    std::fs::copy(example("chelsea.jpg"), img.join("unknown.jpg")).unwrap();
    write(&ann.join("unknown.xml"), voc_xml(&["unicorn"]));
    std::fs::copy(example("chelsea.jpg"), img.join("nolabels.jpg")).unwrap();
    write(&ann.join("nolabels.xml"), voc_xml(&[]));
    tiny_png(&img.join("tiny.png"), 12, 10);
    write(&ann.join("tiny.xml"), voc_xml(&["cat"]));
    let ids = [
        "good", "missing", "corrupt", "noxml", "badxml", "unknown", "nolabels", "tiny",
    ];
    write(&d.join("split.txt"), ids.join("\n"));
    let o = cams(&[
        "--images",
        img.to_str().unwrap(),
        "--annotations",
        ann.to_str().unwrap(),
        "--split",
        d.join("split.txt").to_str().unwrap(),
        "--out",
        d.join("out").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    check_file(&d.join("out/good.npz"), &[7], (300, 451));
    assert!(err.contains("7 image(s) failed"), "{err}");
    for (id, why) in [
        ("missing", "no image file"),
        ("corrupt", "corrupt.jpg"),
        ("noxml", "noxml.xml"),
        ("badxml", "invalid XML"),
        ("unknown", "unknown class `unicorn`"),
        ("nolabels", "no image-level labels"),
        ("tiny", "smaller than the model's 16-pixel patch"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{id}: ")) && l.contains(why)),
            "{id}: no line with `{why}` in\n{err}"
        );
        assert!(!d.join(format!("out/{id}.npz")).exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "clip-es-cams.json")
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

fn dataset_of_copies(d: &Path, n: usize) -> PathBuf {
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    let sources = ["chelsea.jpg", "astronaut.jpg", "camera.jpg", "horse.jpg"];
    let labels = ["cat", "person", "person", "horse"];
    let mut lines = String::new();
    for i in 0..n {
        std::fs::copy(example(sources[i % 4]), img.join(format!("im{i:02}.jpg"))).unwrap();
        lines += &format!("im{i:02} {}\n", labels[i % 4]);
    }
    write(&d.join("split.txt"), lines);
    img
}

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // the stage's record of its settings
        .filter(|p| !p.ends_with("clip-es-cams.json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn reruns_skip_finished_images_and_shards_are_disjoint() {
    let d = tmpdir("shard");
    let img = dataset_of_copies(&d, 5);
    let split = d.join("split.txt");
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "--images",
            img.to_str().unwrap(),
            "--split",
            split.to_str().unwrap(),
        ];
        let out = d.join(out);
        let out = out.to_str().unwrap().to_string();
        a.extend(["--out", &out]);
        a.extend(extra);
        cams(&a)
    };
    let o = run("full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = outputs(&d.join("full"));
    assert_eq!(full.len(), 5);
    let o = run("full", &[]);
    assert!(
        stderr(&o).contains("5 already done, 0 to process"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(d.join("full/im03.npz")).unwrap();
    let o = run("full", &[]);
    assert!(
        stderr(&o).contains("4 already done, 1 to process"),
        "{}",
        stderr(&o)
    );
    assert_eq!(outputs(&d.join("full")), full);

    let o = run("sharded", &["--shard", "0/2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = outputs(&d.join("sharded"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["im00.npz", "im02.npz", "im04.npz"]);
    let o = run("sharded", &["--shard", "1/2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outputs(&d.join("sharded")), full);
    let o = run("x", &["--shard", "2/2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("need 0 <= I < N"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_killed_run_resumes_to_the_same_files() {
    let d = tmpdir("kill");
    let img = dataset_of_copies(&d, 12);
    let split = d.join("split.txt");
    let args = |out: &Path| {
        vec![
            "cams".to_string(),
            "--model".into(),
            model().display().to_string(),
            "--threads".into(),
            "1".into(),
            "--images".into(),
            img.display().to_string(),
            "--split".into(),
            split.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let reference = d.join("reference");
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args(&reference))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let out = d.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args(&out))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the first image is written (or whenever the run ends by itself).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let done = std::fs::read_dir(&out)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with(".npz"))
            })
            .unwrap_or(false);
        if done || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().ok();
    child.wait().unwrap();
    // Whatever was written under a final name is complete.
    for (name, _) in outputs(&out) {
        if name.ends_with(".npz") && !name.starts_with('.') {
            CamFile::read(&out.join(&name)).unwrap();
        }
    }
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args(&out))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        outputs(&out),
        outputs(&reference),
        "resumed run differs from an uninterrupted one"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn run_chains_cams_masks_and_eval() {
    let d = tmpdir("run");
    let ex = root().join("../../examples");
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args([
            "run",
            "--model",
            model().to_str().unwrap(),
            "--threads",
            "1",
        ])
        .args([
            "--images",
            ex.join("images").to_str().unwrap(),
            "--labels",
            ex.join("labels.txt").to_str().unwrap(),
        ])
        .args([
            "--gt",
            ex.join("gt").to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    for id in ["astronaut", "camera", "chelsea", "horse"] {
        assert!(d.join(format!("cams/{id}.npz")).is_file());
        assert!(d.join(format!("masks/{id}.png")).is_file());
    }
    // Both evaluations ran: the CAM one with its background-exponent sweep.
    assert_eq!(
        out.matches("\nmIoU ").count() + usize::from(out.starts_with("mIoU ")),
        2,
        "{out}"
    );
    assert!(out.contains("best bg power"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `run` forwards the options of every stage: with a non-default box threshold, two templates,
/// other background words, a mask confidence and a background exponent, its outputs equal
/// those of the stages run one by one with the same options (and differ from the defaults').
#[test]
fn run_forwards_every_stage_option() {
    let d = tmpdir("run-options");
    let ex = root().join("../../examples");
    let bin = || Command::new(env!("CARGO_BIN_EXE_clip-es"));
    let (images, labels, gt) = (ex.join("images"), ex.join("labels.txt"), ex.join("gt"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cam_opts = [
        "--box-threshold",
        "0.55",
        "--template",
        "a photo of a {}.",
        "--template",
        "a clean origami {}.",
        "--background",
        "voc",
        "--dataset",
        "voc",
    ];
    let o = bin()
        .args(["run", "--model", &s(&model()), "--threads", "1"])
        .args(["--images", &s(&images), "--labels", &s(&labels)])
        .args(["--gt", &s(&gt), "--out", &s(&d.join("run"))])
        .args(cam_opts)
        .args(["--confidence", "0.6", "--bg-power", "3"])
        .output()
        .unwrap();
    let run_out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{run_out}\n{}", stderr(&o));

    let sep = d.join("separate");
    let o = bin()
        .args(["cams", "--model", &s(&model()), "--threads", "1"])
        .args(["--images", &s(&images), "--labels", &s(&labels)])
        .args(["--out", &s(&sep.join("cams"))])
        .args(cam_opts)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin()
        .args([
            "masks",
            "--cams",
            &s(&sep.join("cams")),
            "--images",
            &s(&images),
        ])
        .args(["--split", &s(&labels), "--out", &s(&sep.join("masks"))])
        .args(["--confidence", "0.6", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin()
        .args(["eval", "--cams", &s(&sep.join("cams")), "--gt", &s(&gt)])
        .args(["--split", &s(&labels), "--bg-power", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let eval_out = String::from_utf8_lossy(&o.stdout).into_owned();

    let run_cams = outputs(&d.join("run/cams"));
    assert_eq!(run_cams.len(), 4);
    assert_eq!(run_cams, outputs(&sep.join("cams")), "CAMs differ");
    assert_eq!(
        outputs(&d.join("run/masks")),
        outputs(&sep.join("masks")),
        "masks differ"
    );
    // The CAM evaluation of `run` (printed first) is the separate one.
    assert!(run_out.starts_with(&eval_out), "{run_out}\n---\n{eval_out}");
    assert!(eval_out.contains("bg power 3: mIoU"), "{eval_out}");

    // The options mattered: the defaults give other CAMs.
    let o = cams(&[
        "--images",
        &s(&images),
        "--labels",
        &s(&labels),
        "--out",
        &s(&d.join("defaults")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(run_cams, outputs(&d.join("defaults")));
    std::fs::remove_dir_all(&d).unwrap();
}
