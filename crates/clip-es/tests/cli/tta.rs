//! Test-time augmentation of the CAM stage (`--scales`, `--flip`) on the tiny random model.

use clip_es::gradcam::{cams_for_image, image_cams, Augment, CamOptions, TextClassifier};
use clip_es_image::{DecodedImage, PilMode};
use clip_es_model::Clip;
use std::path::PathBuf;

fn clip() -> Clip {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../clip-es-model/tests/fixtures/tiny-deep-hf");
    Clip::load(dir.to_str().unwrap()).unwrap()
}

fn classifier(clip: &Clip) -> TextClassifier {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    TextClassifier::build(
        clip,
        &s(&["cat", "sofa", "person with clothes,people"]),
        &s(&["ground", "wall", "sky"]),
        &s(&["a clean origami {}."]),
    )
    .unwrap()
}

/// A deterministic RGB picture (w x h) and its mirror image.
fn pictures(w: usize, h: usize) -> (DecodedImage, DecodedImage) {
    let mut data = vec![0u8; w * h * 3];
    let mut state = 12345u32;
    for v in data.iter_mut() {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        *v = (state >> 24) as u8;
    }
    let mut mirrored = data.clone();
    for row in mirrored.chunks_exact_mut(w * 3) {
        let px: Vec<[u8; 3]> = row
            .chunks_exact(3)
            .rev()
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        row.copy_from_slice(&px.concat());
    }
    (
        DecodedImage::from_raw(w as u32, h as u32, PilMode::Rgb, data, None).unwrap(),
        DecodedImage::from_raw(w as u32, h as u32, PilMode::Rgb, mirrored, None).unwrap(),
    )
}

/// The CLIP input size of the reference's single pass: the image's size rounded up to the patch.
fn base(img: &DecodedImage) -> (usize, usize) {
    clip_es_image::patch_multiple(img.height() as usize, img.width() as usize, 16)
}

#[test]
fn a_mirrored_image_gives_mirrored_cams_with_flip() {
    let clip = clip();
    let cls = classifier(&clip);
    // Sides are multiples of the patch: the CLIP input of the mirror is the mirrored input.
    let (w, h) = (64, 48);
    let (img, mirror) = pictures(w, h);
    let labels = [0, 2];
    let opts = CamOptions::default();
    let aug = Augment {
        scales: vec![1.0],
        flip: true,
    };
    let (a, _) =
        cams_for_image(clip.vision(), &cls, &img, base(&img), &labels, &opts, &aug).unwrap();
    let (b, _) = cams_for_image(
        clip.vision(),
        &cls,
        &mirror,
        base(&mirror),
        &labels,
        &opts,
        &aug,
    )
    .unwrap();
    let mut a_mirrored = a.refined.clone();
    clip_es::gradcam::mirror_rows(&mut a_mirrored, w);
    assert_eq!(
        a_mirrored, b.refined,
        "CAMs of the mirror are the mirrored CAMs"
    );
    assert_eq!(a.probabilities, b.probabilities);
    // Without --flip they are not (the positional embedding is not symmetric).
    let (c, _) = cams_for_image(
        clip.vision(),
        &cls,
        &img,
        base(&img),
        &labels,
        &opts,
        &Augment::default(),
    )
    .unwrap();
    let (d, _) = cams_for_image(
        clip.vision(),
        &cls,
        &mirror,
        base(&mirror),
        &labels,
        &opts,
        &Augment::default(),
    )
    .unwrap();
    let mut c_mirrored = c.refined.clone();
    clip_es::gradcam::mirror_rows(&mut c_mirrored, w);
    assert_ne!(c_mirrored, d.refined);
    // The flip ensemble is the mean of the two single passes.
    let mut d_back = d.refined.clone();
    clip_es::gradcam::mirror_rows(&mut d_back, w);
    for ((x, y), z) in c.refined.iter().zip(&d_back).zip(&a.refined) {
        assert!(((x + y) * 0.5 - z).abs() < 1e-6);
    }
}

#[test]
fn scale_one_without_flip_is_the_single_reference_pass() {
    let clip = clip();
    let cls = classifier(&clip);
    let (img, _) = pictures(50, 37);
    let labels = [1];
    let opts = CamOptions::default();
    let (a, _) = cams_for_image(
        clip.vision(),
        &cls,
        &img,
        base(&img),
        &labels,
        &opts,
        &Augment::default(),
    )
    .unwrap();
    let input = img.clip_input(48, 64).unwrap();
    let (b, _) = image_cams(clip.vision(), &cls, &input, (37, 50), &labels, &opts).unwrap();
    assert_eq!(a.refined, b.refined);
    // Other scales: maps at the image's size, in [0, 1], different from scale 1 alone.
    let aug = Augment {
        scales: vec![1.0, 0.75, 1.25],
        flip: true,
    };
    let (m, _) =
        cams_for_image(clip.vision(), &cls, &img, base(&img), &labels, &opts, &aug).unwrap();
    assert_eq!((m.height, m.width), (37, 50));
    assert_eq!(m.refined.len(), 37 * 50);
    assert!(m.refined.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
    assert_ne!(m.refined, a.refined);
    assert!(Augment::parse_scales("1.0,0.75,1.25").is_ok());
    assert!(Augment::parse_scales("1,1").unwrap_err().contains("twice"));
    assert!(Augment::parse_scales("0").is_err());
    assert!(Augment::parse_scales("x").is_err());
}

/// `clip-es cams` with the default and with an explicit `--scales 1.0` writes the same bytes, and
/// what the program wrote before test-time augmentation existed (`tests/data/tta/small.main.npz`,
/// made by the previous release on the same tiny model and photo): the same keys and layout, the
/// values within one float16 step. (Not byte for byte: the `gemm` crate picks its blocking from
/// the CPU's caches at run time, so another machine may sum in another order; on an AMD EPYC
/// both the old and the new binary differ from the file in one value by one step.)
#[test]
fn cams_output_is_unchanged_by_default() {
    use clip_es::cam_files::CamFile;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/data/tta");
    let before = CamFile::read(&data.join("small.main.npz")).unwrap();
    let mut outputs = Vec::new();
    for (k, extra) in [&[][..], &["--scales", "1.0"][..]].iter().enumerate() {
        let dir = clip_es_testkit::TempDir::new(&format!("tta-{k}"));
        let out = dir.join("out");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_clip-es"))
            .args(["cams", "--threads", "1", "--dataset", "voc", "--model"])
            .arg(root.join("../clip-es-model/tests/fixtures/tiny-deep-hf"))
            .arg("--images")
            .arg(&data)
            .arg("--labels")
            .arg(data.join("labels.txt"))
            .arg("--out")
            .arg(&out)
            .args(*extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let now = CamFile::read(&out.join("small.npz")).unwrap();
        assert_eq!(now.keys, before.keys, "cams {extra:?}: keys changed");
        assert_eq!((now.height, now.width), (before.height, before.width));
        assert_eq!(now.attn_highres.len(), before.attn_highres.len());
        let mut worst = 0f32;
        for (a, b) in now.attn_highres.iter().zip(&before.attn_highres) {
            // one float16 step at the value's magnitude
            let step = f32::EPSILON
                .max(b.to_f32().abs() * 2f32.powi(-10))
                .max(2f32.powi(-24));
            worst = worst.max((a.to_f32() - b.to_f32()).abs() / step);
        }
        assert!(
            worst <= 1.0,
            "cams {extra:?}: values moved by {worst} float16 steps"
        );
        outputs.push(std::fs::read(out.join("small.npz")).unwrap());
        std::fs::remove_dir_all(&out).unwrap();
    }
    assert!(
        outputs[0] == outputs[1],
        "the default and --scales 1.0 differ"
    );
}
