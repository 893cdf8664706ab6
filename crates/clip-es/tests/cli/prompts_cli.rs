//! `clip-es prompts` against a direct PyTorch computation of the sharpness criterion on the
//! tiny random model (tools/golden_sharpness.py -> tests/data/sharpness.json).

use clip_es_testkit::TempDir;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sharpness_matches_pytorch() {
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/data/sharpness.json")).unwrap())
            .unwrap();
    let d = TempDir::new("prompts");
    let split: Vec<&str> = golden["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    std::fs::write(d.join("split.txt"), split.join("\n") + "\n").unwrap();
    let results = golden["results"].as_array().unwrap();
    let templates: Vec<&str> = results
        .iter()
        .map(|r| r["template"].as_str().unwrap())
        .collect();
    std::fs::write(d.join("templates.txt"), templates.join("\n") + "\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(["prompts", "--dataset", "voc", "--threads", "1", "--model"])
        .arg(root().join("../clip-es-model/tests/fixtures/tiny-deep-hf"))
        .arg("--images")
        .arg(root().join("../../examples/images"))
        .arg("--split")
        .arg(d.join("split.txt"))
        .arg("--templates")
        .arg(d.join("templates.txt"))
        .arg("--json")
        .arg(d.join("out.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("1 single-label images not used"),
        "{stdout}"
    );
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out.json")).unwrap()).unwrap();
    assert_eq!(got["images_used"], 3);
    let ranked = got["templates"].as_array().unwrap();
    assert_eq!(ranked.len(), templates.len());
    let mut largest = 0f64;
    for r in results {
        let t = r["template"].as_str().unwrap();
        let want = r["sharpness"].as_f64().unwrap();
        let have = ranked.iter().find(|g| g["template"] == t).unwrap()["sharpness"]
            .as_f64()
            .unwrap();
        largest = largest.max(want);
        assert!(
            (have - want).abs() <= 1e-4 * want.abs(),
            "{t}: {have} vs PyTorch {want}"
        );
    }
    // The values are not all vanishing (the comparison would then say nothing).
    assert!(largest > 1e-3, "largest sharpness {largest}");
    // Ranked from the lowest.
    let values: Vec<f64> = ranked
        .iter()
        .map(|g| g["sharpness"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A templates file saved with a UTF-8 byte-order mark: the mark is not part of the first
/// template (it would change its prompts and its name in the report).
#[test]
fn templates_file_with_byte_order_mark() {
    let d = TempDir::new("prompts-bom");
    std::fs::write(
        d.join("split.txt"),
        "chelsea cat sofa\nhorse horse person\n",
    )
    .unwrap();
    std::fs::write(
        d.join("templates.txt"),
        "\u{feff}a photo of {}.\na clean origami {}.\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(["prompts", "--dataset", "voc", "--threads", "1", "--model"])
        .arg(root().join("../clip-es-model/tests/fixtures/tiny-deep-hf"))
        .arg("--images")
        .arg(root().join("../../examples/images"))
        .arg("--split")
        .arg(d.join("split.txt"))
        .arg("--templates")
        .arg(d.join("templates.txt"))
        .arg("--json")
        .arg(d.join("out.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out.json")).unwrap()).unwrap();
    let mut names: Vec<&str> = got["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["template"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a clean origami {}.", "a photo of {}."]);
    std::fs::remove_dir_all(&d).unwrap();
}
