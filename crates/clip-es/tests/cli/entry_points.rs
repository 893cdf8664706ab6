//! The library entry points of `segment`, `prompts` and `run` (`clip_es::segment::run`,
//! `clip_es::prompts::run`, `clip_es::pipeline::run`) write the same files, byte for byte, as
//! the command line with the same settings, on the tiny random model and the example photos.

use clip_es::cams::DatasetConfig;
use clip_es::pipeline::{PipelineConfig, Stage3Config};
use clip_es::prompts::PromptsConfig;
use clip_es::segment::SegmentConfig;
use clip_es::{ClassSet, Silent};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> String {
    s(&root().join("../clip-es-model/tests/fixtures/tiny-deep-hf"))
}

fn examples() -> PathBuf {
    root().join("../../examples")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

use clip_es_testkit::TempDir;

fn cli(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "clip-es {args:?}: exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every file under `dir` (relative name -> bytes). Paths naming the run's own output folder
/// (the training checkpoints and manifests record them) are written as `dir` of the other run
/// would be, whose name has the same length; the seconds of the training log are dropped.
fn files(dir: &Path, other: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out)
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf())
            }
        }
    }
    let mut names = Vec::new();
    walk(dir, dir, &mut names);
    let (from, to) = (s(dir), s(other));
    assert_eq!(from.len(), to.len());
    names
        .into_iter()
        .map(|name| {
            let mut bytes = std::fs::read(dir.join(&name)).unwrap();
            for i in 0..bytes.len().saturating_sub(from.len() - 1) {
                if bytes[i..].starts_with(from.as_bytes()) {
                    bytes[i..i + to.len()].copy_from_slice(to.as_bytes());
                }
            }
            if name.ends_with("train.jsonl") {
                let text = String::from_utf8(bytes).unwrap();
                let lines: Vec<String> = text
                    .lines()
                    .map(|l| {
                        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v.as_object_mut().unwrap().remove("seconds");
                        v.to_string()
                    })
                    .collect();
                bytes = lines.join("\n").into_bytes();
            }
            (s(&name), bytes)
        })
        .collect()
}

fn assert_same_files(cli_dir: &Path, lib_dir: &Path) {
    let (a, b) = (files(cli_dir, lib_dir), files(lib_dir, lib_dir));
    assert!(!a.is_empty(), "no files in {}", cli_dir.display());
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the file names differ"
    );
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs");
    }
}

#[test]
fn segment_run_writes_the_files_of_the_command() {
    let d = TempDir::new("segment");
    let photos = [
        s(&examples().join("images/chelsea.jpg")),
        s(&examples().join("images/horse.jpg")),
    ];
    // Typed classes, label-free tagging, and tags alone.
    let cases: [(&str, &[&str]); 3] = [
        ("typed", &["--classes", "cat,horse"]),
        ("free", &["--max-tags", "2", "--no-crf"]),
        ("tags", &["--tags-only"]),
    ];
    for (tag, options) in cases {
        let (cli_dir, lib_dir) = (
            d.path().join(format!("{tag}-cli")),
            d.path().join(format!("{tag}-lib")),
        );
        let mut args = vec!["segment", "--model", &model(), "--threads", "1"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(options.iter().map(|o| o.to_string()));
        args.extend(["--out".into(), s(&cli_dir)]);
        args.extend(photos.iter().cloned());
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>());

        let mut config = SegmentConfig::new(photos.iter().map(PathBuf::from).collect());
        config.model = model();
        config.threads = Some(1);
        config.out = lib_dir.clone();
        match tag {
            "typed" => config.classes = Some("cat,horse".into()),
            "free" => {
                config.options.tags.max_tags = 2;
                config.options.mask.use_crf = false;
            }
            _ => config.tags_only = true,
        }
        let report = clip_es::segment::run(&config, &Silent).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.results.len(), 2);
        assert_same_files(&cli_dir, &lib_dir);
    }
}

#[test]
fn prompts_run_writes_the_ranking_of_the_command() {
    let d = TempDir::new("prompts");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/data/sharpness.json")).unwrap())
            .unwrap();
    let split: Vec<&str> = golden["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    std::fs::write(d.path().join("split.txt"), split.join("\n") + "\n").unwrap();
    let templates = "a photo of a {}.\na clean origami {}.\n# a comment\nart of the {}.\n";
    std::fs::write(d.path().join("templates.txt"), templates).unwrap();
    let (cli_dir, lib_dir) = (d.path().join("cli"), d.path().join("lib"));
    std::fs::create_dir_all(&cli_dir).unwrap();
    std::fs::create_dir_all(&lib_dir).unwrap();
    let images = examples().join("images");
    cli(&[
        "prompts",
        "--dataset",
        "voc",
        "--threads",
        "1",
        "--model",
        &model(),
        "--images",
        &s(&images),
        "--split",
        &s(&d.path().join("split.txt")),
        "--templates",
        &s(&d.path().join("templates.txt")),
        "--json",
        &s(&cli_dir.join("ranking.json")),
    ]);
    let data = DatasetConfig {
        images,
        annotations: None,
        labels: None,
        split: Some(d.path().join("split.txt")),
    };
    let templates = clip_es::prompts::read_templates(&d.path().join("templates.txt")).unwrap();
    assert_eq!(templates.len(), 3);
    let mut config = PromptsConfig::new(data, templates);
    config.model = model();
    config.threads = Some(1);
    config.json = Some(lib_dir.join("ranking.json"));
    let report = clip_es::prompts::run(&config, &Silent).unwrap();
    assert_eq!(report.images_used, 3);
    assert_eq!(report.ranking.len(), 3);
    assert_same_files(&cli_dir, &lib_dir);
}

#[test]
fn pipeline_run_writes_the_files_of_the_command() {
    let d = TempDir::new("pipeline");
    let (cli_dir, lib_dir) = (d.path().join("cli"), d.path().join("lib"));
    let ex = examples();
    cli(&[
        "run",
        "--model",
        &model(),
        "--images",
        &s(&ex.join("images")),
        "--labels",
        &s(&ex.join("labels.txt")),
        "--gt",
        &s(&ex.join("gt")),
        "--out",
        &s(&cli_dir),
        "--threads",
        "2",
        "--overlays",
        "--train",
        "clip-decoder",
        "--train-iters",
        "4",
        "--train-batch",
        "2",
        "--train-save-every",
        "2",
    ]);
    let data = DatasetConfig {
        images: ex.join("images"),
        annotations: None,
        labels: Some(ex.join("labels.txt")),
        split: None,
    };
    let mut config = PipelineConfig::new(data, ClassSet::voc(), lib_dir.clone());
    config.model = model();
    config.gt = Some(ex.join("gt"));
    config.threads = Some(2);
    config.overlays = true;
    config.stage3 = Some(Stage3Config {
        iters: Some(4),
        batch: 2,
        save_every: 2,
        ..Stage3Config::new(clip_es_train::Arch::ClipDecoder)
    });
    let report = clip_es::pipeline::run(&config, &Silent).unwrap();
    assert!(!report.any_failed());
    assert_eq!(report.evals.len(), 3);
    assert_eq!(report.train.as_ref().map(|t| t.iters), Some(4));
    assert_same_files(&cli_dir, &lib_dir);
}

/// A stop asked for (Ctrl-C in Python) ends `segment` before the next photo and the pipeline
/// before the next stage, with what was finished kept.
#[test]
fn run_until_stops_between_photos_and_stages() {
    let d = TempDir::new("stop");
    let mut seg = SegmentConfig::new(vec![examples().join("images/chelsea.jpg")]);
    seg.model = model();
    seg.threads = Some(1);
    seg.classes = Some("cat".into());
    seg.out = d.path().join("segments");
    let r = clip_es::segment::run_until(&seg, &Silent, &|| true);
    assert!(
        matches!(r, Err(clip_es::segment::SegmentRunError::Stopped)),
        "{r:?}"
    );
    assert_eq!(std::fs::read_dir(&seg.out).unwrap().count(), 0);

    let ex = examples();
    let data = DatasetConfig {
        images: ex.join("images"),
        annotations: None,
        labels: Some(ex.join("labels.txt")),
        split: None,
    };
    let mut config = PipelineConfig::new(data, ClassSet::voc(), d.path().join("run"));
    config.model = model();
    config.threads = Some(1);
    let r = clip_es::pipeline::run_until(&config, &Silent, &|| true);
    match r {
        Err(clip_es::pipeline::PipelineError::Stopped(m)) => {
            assert_eq!(m, "stopped before the pseudo masks stage")
        }
        other => panic!("{other:?}"),
    }
    assert!(d.path().join("run/cams/horse.npz").is_file());
    assert!(!d.path().join("run/masks").exists());
}
