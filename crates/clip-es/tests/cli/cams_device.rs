//! The CAM stage with the image tower on a burn device (`CamSettings::device`, `--device`)
//! against the CPU kernels, on the tiny 10-block model and the example photos: the same keys,
//! the maps within float32 rounding (both sides compute in f32; the files hold float16).
//! `flex` runs everywhere; the `vulkan_*` tests need the `vulkan` feature and a Vulkan driver
//! (Mesa's lavapipe in CI).

use clip_es::cam_files::CamFile;
use clip_es::cams::{self, CamSettings, CamsConfig, DatasetConfig};
use clip_es::ClassSet;
use clip_es_gpu::BurnDevice;
use std::path::PathBuf;

/// Tolerances of the maps in [0, 1] (float16 in the files: one step is 2.4e-4 to 4.9e-4 in
/// [0.25, 1]): the mean and the largest absolute difference between the
/// burn tower's CAMs and the CPU kernels' (f32 rounding of a different summation order).
const MEAN_TOL: f64 = 5e-4;
const MAX_TOL: f32 = 2e-3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-es-device-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> String {
    root()
        .join("../clip-es-model/tests/fixtures/tiny-deep-hf")
        .to_str()
        .unwrap()
        .to_string()
}

/// The CAM stage over the example photos into `out`, the image tower on `device`.
fn run_stage(out: PathBuf, device: Option<BurnDevice>) -> Vec<(String, CamFile)> {
    let ex = root().join("../../examples");
    let config = CamsConfig {
        data: DatasetConfig {
            images: ex.join("images"),
            annotations: None,
            labels: Some(ex.join("labels.txt")),
            split: None,
        },
        classes: ClassSet::voc(),
        model: model(),
        settings: CamSettings {
            save_unrefined: true,
            device,
            ..CamSettings::default()
        },
        out: out.clone(),
        shard: None,
        overwrite: false,
        report: None,
        threads: Some(1),
        exif: Default::default(),
    };
    let report = cams::run(&config, &clip_es::progress::Silent).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.written.len() >= 3, "{} images", report.written.len());
    let files = read_cams(&out);
    assert_eq!(files.len(), report.written.len());
    files
}

/// The CAM files in `out`, by name.
fn read_cams(out: &std::path::Path) -> Vec<(String, CamFile)> {
    let mut files: Vec<(String, CamFile)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "npz"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                CamFile::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// (mean, max) absolute difference of two float16 maps.
fn diff(a: &[half::f16], b: &[half::f16]) -> (f64, f32) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0f64;
    let mut max = 0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x.to_f32() - y.to_f32()).abs();
        sum += d as f64;
        max = max.max(d);
    }
    (sum / a.len() as f64, max)
}

/// The stage on `device` writes the same files as on the CPU kernels: names, keys, sizes, and
/// both kinds of maps within the tolerances.
fn check_device_matches_cpu(tag: &str, device: BurnDevice) {
    let d = tmpdir(tag);
    let cpu = run_stage(d.join("cpu"), None);
    let dev = run_stage(d.join(device.name()), Some(device));
    compare(&cpu, &dev, device.name());
    let _ = std::fs::remove_dir_all(&d);
}

/// The same file names, keys and sizes, and both kinds of maps within the tolerances.
fn compare(cpu: &[(String, CamFile)], dev: &[(String, CamFile)], device: &str) {
    let names = |f: &[(String, CamFile)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(cpu), names(dev), "file names");
    for ((name_c, c), (_, g)) in cpu.iter().zip(dev) {
        assert_eq!(c.keys, g.keys, "{name_c}: keys");
        assert_eq!((c.height, c.width), (g.height, g.width), "{name_c}: size");
        let (mean, max) = diff(&c.attn_highres, &g.attn_highres);
        eprintln!("{name_c} attn_highres on {device}: mean {mean:.2e}, max {max:.2e}");
        assert!(
            mean < MEAN_TOL && max < MAX_TOL,
            "{name_c} attn_highres: mean {mean}, max {max}"
        );
        let (mean, max) = diff(c.highres.as_ref().unwrap(), g.highres.as_ref().unwrap());
        eprintln!("{name_c} highres on {device}: mean {mean:.2e}, max {max:.2e}");
        assert!(
            mean < MEAN_TOL && max < MAX_TOL,
            "{name_c} highres: mean {mean}, max {max}"
        );
    }
}

#[test]
fn flex_cams_equal_cpu_kernels() {
    check_device_matches_cpu("flex", BurnDevice::Flex);
}

/// The per-image entry point on a burn device: the same maps and probabilities as on the CPU
/// kernels, for a downscaled input (not a square grid) and two labels.
#[test]
fn flex_image_cams_equal_cpu_kernels() {
    let settings = CamSettings {
        max_side: 160,
        ..CamSettings::default()
    };
    let cpu = cams::Cams::load(&model(), ClassSet::voc(), &settings).unwrap();
    let flex = cams::Cams::load(
        &model(),
        ClassSet::voc(),
        &CamSettings {
            device: Some(BurnDevice::Flex),
            ..settings
        },
    )
    .unwrap();
    assert_eq!((cpu.device_name(), flex.device_name()), ("cpu", "flex"));
    let image =
        clip_es_image::DecodedImage::open(&root().join("../../examples/images/chelsea.jpg"))
            .unwrap();
    let labels = [7, 11];
    let (a, _) = cpu.image(&image, &labels).unwrap();
    let (b, _) = flex.image(&image, &labels).unwrap();
    assert_eq!(a.refined.len(), b.refined.len());
    let max = a
        .refined
        .iter()
        .zip(&b.refined)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < MAX_TOL, "refined maps: max diff {max}");
    for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
        assert!(
            (p - q).abs() < 1e-5,
            "{:?} vs {:?}",
            a.probabilities,
            b.probabilities
        );
    }
}

#[test]
fn unknown_device_is_refused_with_the_choices() {
    let e = cams::parse_device("tpu").unwrap_err();
    assert!(e.contains("--device tpu") && e.contains("flex"), "{e}");
    assert_eq!(cams::parse_device("cpu").unwrap(), None);
    assert_eq!(cams::parse_device("flex").unwrap(), Some(BurnDevice::Flex));
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_without_the_feature_says_how_to_build_it() {
    let e = cams::parse_device("vulkan").unwrap_err();
    assert!(e.contains("--features vulkan"), "{e}");
}

/// `clip-es cams --device vulkan` on the example photos writes the CPU kernels' files (names,
/// keys, sizes; maps within the tolerances) and names the Vulkan adapter on its first line.
/// `CUBECL_AUTOTUNE_LEVEL=minimal` (as .ci/vulkan sets it) keeps burn's kernel autotuning from
/// compiling every candidate kernel for each new image size on a software device.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_cams_cli_equal_cpu_kernels() {
    let d = tmpdir("cli-vulkan");
    let ex = root().join("../../examples");
    let out = d.join("vulkan");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(["cams", "--images"])
        .arg(ex.join("images"))
        .arg("--labels")
        .arg(ex.join("labels.txt"))
        .args([
            "--model",
            &model(),
            "--device",
            "vulkan",
            "--save-unrefined",
        ])
        .args(["--threads", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    eprintln!("clip-es cams --device vulkan: {first}");
    assert!(
        first.starts_with("device: vulkan (") && first.ends_with(')'),
        "{stderr}"
    );
    let cpu = run_stage(d.join("cpu"), None);
    let dev = read_cams(&out);
    compare(&cpu, &dev, "vulkan");
    let _ = std::fs::remove_dir_all(&d);
}

/// `clip-es cams` with a device it cannot use: exit 2 before any work, one `error:` line that
/// names `--device` and the problem, nothing written.
fn cams_cli_refuses(device: &str, expect: &str) {
    let d = tmpdir(&format!("cli-{device}"));
    let ex = root().join("../../examples");
    let out = d.join("cams");
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(["cams", "--images"])
        .arg(ex.join("images"))
        .arg("--labels")
        .arg(ex.join("labels.txt"))
        .args(["--model", &model(), "--device", device, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error:") && stderr.contains(expect),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "nothing is written");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cams_cli_refuses_an_unknown_device() {
    cams_cli_refuses("tpu", "--device tpu: unknown device");
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_cams_cli_without_the_feature_says_how_to_build_it() {
    cams_cli_refuses("vulkan", "--features vulkan");
}

/// `clip-es segment --device`: `flex` segments a photo (the CAM stage's image tower on burn);
/// an unknown name is refused before any work.
#[test]
fn segment_cli_takes_the_cam_device() {
    let d = tmpdir("segment");
    let photo = root().join("../../examples/images/chelsea.jpg");
    let run = |device: &str, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clip-es"))
            .arg("segment")
            .arg(&photo)
            .args([
                "--model",
                &model(),
                "--threads",
                "1",
                "--classes",
                "cat,sofa",
            ])
            .args(["--no-crf", "--max-side", "128", "--device", device, "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let o = run("flex", &d.join("flex"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some("device: flex (CPU)"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(d.join("flex")).unwrap().count() > 0);
    let o = run("tpu", &d.join("tpu"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--device tpu: unknown device"), "{stderr}");
    assert!(!d.join("tpu").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A photo whose ViT input needs larger GPU buffers than the device allows (lavapipe's limit is
/// about 128 MB; at 2000x1500, `--max-side 1024`, the tiny model's attention takes 151 MB) is
/// that photo's failure, with the device's reason and what to lower, not a panic of the run:
/// the other photo is still written, equal to the CPU kernels'. On a GPU with larger buffers
/// both photos are written.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_cams_failure_on_one_photo_does_not_stop_the_run() {
    let d = tmpdir("vulkan-large");
    let images = d.join("images");
    std::fs::create_dir_all(&images).unwrap();
    super::large_photos::write_photo(&images.join("large.png"), 2000, 1500, true);
    std::fs::copy(
        root().join("../../examples/images/horse.jpg"),
        images.join("horse.jpg"),
    )
    .unwrap();
    std::fs::write(d.join("labels.txt"), "large cat\nhorse horse\n").unwrap();
    let out = d.join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(["cams", "--images"])
        .arg(&images)
        .arg("--labels")
        .arg(d.join("labels.txt"))
        .args(["--model", &model(), "--device", "vulkan", "--threads", "1"])
        .arg("--out")
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    match o.status.code() {
        Some(0) => assert!(out.join("large.npz").is_file()),
        Some(1) => {
            assert!(!out.join("large.npz").exists());
            assert!(
                stderr.contains("large: ") && stderr.contains("lower --max-side"),
                "{stderr}"
            );
        }
        code => panic!("exit {code:?}: {stderr}"),
    }
    let got = CamFile::read(&out.join("horse.npz")).unwrap();
    let cpu = run_stage(d.join("cpu"), None);
    let (_, want) = cpu.iter().find(|(n, _)| n == "horse.npz").unwrap();
    assert_eq!(got.keys, want.keys);
    let (mean, max) = diff(&got.attn_highres, &want.attn_highres);
    assert!(
        mean < MEAN_TOL && max < MAX_TOL,
        "horse: mean {mean}, max {max}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
