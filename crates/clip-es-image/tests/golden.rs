//! Parity with Pillow 13 / torchvision / OpenCV 5.0 on the files of tools/golden_image.py.

mod common;

use clip_es_image::{
    load_rgb, load_rgb_with, resize_bilinear_f32, resize_bilinear_f32_without_ipp, ClipInput,
    DecodedImage, ExifOrientation, PilMode, Rgb8Image,
};
use common::{compare_f32, image_path, manifest, npy, NpyData};

/// Prefix of a file's expected arrays (`gray.jpg` -> `gray_jpg`).
fn stem(file: &str) -> String {
    file.replace('.', "_")
}

/// Files that clip-es decodes differently from Pillow on purpose: a 16-bit greyscale PNG is
/// scaled to 8 bits (high byte, as OpenCV does) where Pillow keeps `I;16` and saturates it to
/// white when converting to RGB. Checked by `sixteen_bit_grey_is_its_high_byte` instead.
const DEVIATES_FROM_PIL: &[&str] = &["gray16.png"];

/// The golden files, less those in [`DEVIATES_FROM_PIL`].
fn images() -> Vec<serde_json::Value> {
    all_images()
        .into_iter()
        .filter(|e| !DEVIATES_FROM_PIL.contains(&e["file"].as_str().unwrap()))
        .collect()
}

fn all_images() -> Vec<serde_json::Value> {
    manifest()["images"].as_array().expect("images").clone()
}

/// 16-bit grey: mode `L` holding the high byte of Pillow's `I;16` samples, and the same pixels
/// as OpenCV's `imread`, so CLIP, the CRF and the pictures see one image.
#[test]
fn sixteen_bit_grey_is_its_high_byte() {
    let file = "gray16.png";
    assert!(all_images().iter().any(|e| e["file"] == file));
    let img = DecodedImage::open(&image_path(file)).unwrap();
    assert_eq!(img.mode(), PilMode::L);
    let pil = npy(&format!("{}.decoded", stem(file)));
    let NpyData::U16(full) = &pil.data else {
        panic!("{file}: PIL's samples are 16-bit")
    };
    let high: Vec<u8> = full.iter().map(|&v| (v >> 8) as u8).collect();
    assert_eq!(img.samples(), high.as_slice());
    assert!(high.iter().any(|&v| v < 255), "the golden is not all white");
    assert_rgb_eq(
        file,
        &img.to_rgb8(),
        &npy(&format!("{}.imread", stem(file))),
    );
}

/// Compares an image's samples with a PIL array (uint8 / bool / uint16).
fn assert_samples_eq(what: &str, img: &DecodedImage, want: &common::Npy) {
    match &want.data {
        NpyData::U8(v) => assert!(img.samples() == v.as_slice(), "{what}: samples differ"),
        NpyData::Bool(v) => {
            let got: Vec<bool> = img.samples().iter().map(|&b| b != 0).collect();
            assert!(
                img.samples().iter().all(|&b| b == 0 || b == 255),
                "{what}: mode 1 holds 0/255"
            );
            assert!(got == *v, "{what}: bilevel samples differ");
        }
        NpyData::U16(v) => assert!(
            img.samples_i16() == v.as_slice(),
            "{what}: 16-bit samples differ"
        ),
        NpyData::F32(_) => panic!("{what}: float array for an image"),
    }
}

fn assert_rgb_eq(what: &str, got: &Rgb8Image, want: &common::Npy) {
    assert_eq!(
        want.shape,
        vec![got.height as usize, got.width as usize, 3],
        "{what}: shape"
    );
    if got.data != want.u8() {
        let n = got
            .data
            .iter()
            .zip(want.u8())
            .filter(|(a, b)| a != b)
            .count();
        let max = got
            .data
            .iter()
            .zip(want.u8())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        panic!(
            "{what}: {n} of {} samples differ, by up to {max}",
            got.data.len()
        );
    }
}

#[test]
fn decoding_matches_pil() {
    for e in images() {
        let file = e["file"].as_str().unwrap();
        let img = DecodedImage::open(&image_path(file)).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            img.mode().name(),
            e["mode"].as_str().unwrap(),
            "{file}: mode"
        );
        assert_eq!(
            img.width() as u64,
            e["width"].as_u64().unwrap(),
            "{file}: width"
        );
        assert_eq!(
            img.height() as u64,
            e["height"].as_u64().unwrap(),
            "{file}: height"
        );
        let want = npy(&format!("{}.decoded", stem(file)));
        assert_samples_eq(file, &img, &want);
        if img.mode() == PilMode::P {
            let pal = npy(&format!("{}.palette", stem(file)));
            let n = pal.shape[0];
            let got: Vec<u8> = img.palette().unwrap()[..n]
                .iter()
                .flatten()
                .copied()
                .collect();
            assert_eq!(got, pal.u8(), "{file}: palette");
        }
    }
}

#[test]
fn resize_and_rgb_conversion_match_pil() {
    let mut checked = 0;
    for e in images() {
        let file = e["file"].as_str().unwrap();
        let img = DecodedImage::open(&image_path(file)).unwrap();
        for t in e["targets"].as_array().unwrap() {
            let tag = t["tag"].as_str().unwrap();
            let (h, w) = (
                t["height"].as_u64().unwrap() as u32,
                t["width"].as_u64().unwrap() as u32,
            );
            let what = format!("{file} -> {h}x{w} ({tag})");
            let native = img.resize_bicubic(h, w).unwrap();
            assert_eq!(
                native.mode().name(),
                t["native_mode"].as_str().unwrap(),
                "{what}"
            );
            if native.mode() != PilMode::Rgb {
                assert_samples_eq(
                    &format!("{what} native"),
                    &native,
                    &npy(&format!("{}.native_{tag}", stem(file))),
                );
            }
            let rgb = img.resized_rgb8(h, w).unwrap();
            assert_rgb_eq(&what, &rgb, &npy(&format!("{}.resized_{tag}", stem(file))));
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} resize cases");
}

#[test]
fn clip_input_matches_torchvision_transform() {
    let mut worst = 0.0f32;
    let mut checked = 0;
    for e in images() {
        let file = e["file"].as_str().unwrap();
        let img = DecodedImage::open(&image_path(file)).unwrap();
        for t in e["targets"].as_array().unwrap() {
            if !t["tensor"].as_bool().unwrap() {
                continue;
            }
            let tag = t["tag"].as_str().unwrap();
            let (h, w) = (
                t["height"].as_u64().unwrap() as usize,
                t["width"].as_u64().unwrap() as usize,
            );
            let want = npy(&format!("{}.tensor_{tag}", stem(file)));
            assert_eq!(want.shape, vec![3, h, w]);
            let got = if tag == "p16" {
                img.clip_input_for_patch(16).unwrap()
            } else {
                img.clip_input(h, w).unwrap()
            };
            assert_eq!((got.height, got.width), (h, w), "{file} {tag}");
            let (max, unequal) = compare_f32(&got.data, want.f32());
            println!(
                "{file} {tag} {h}x{w}: max |diff| {max:e}, {unequal} unequal of {}",
                got.data.len()
            );
            assert!(max <= 1e-6, "{file} {tag}: max diff {max}");
            assert_eq!(
                unequal, 0,
                "{file} {tag}: not bit-exact ({unequal} values, max {max:e})"
            );
            worst = worst.max(max);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} tensors");
    println!("worst tensor difference over {checked} tensors: {worst:e}");
}

#[test]
fn normalisation_table_matches_torch() {
    let want = npy("normalize_lut");
    assert_eq!(want.shape, vec![3, 256]);
    // one row of 256 pixels holding every byte value in every channel
    let img = Rgb8Image {
        width: 256,
        height: 1,
        data: (0..=255u8).flat_map(|v| [v, v, v]).collect(),
    };
    let got = ClipInput::from_rgb8(&img);
    assert_eq!(compare_f32(&got.data, want.f32()), (0.0, 0));
}

#[test]
fn load_rgb_matches_cv2_imread() {
    for e in all_images() {
        let file = e["file"].as_str().unwrap();
        let (got, _) = load_rgb_with(&image_path(file), ExifOrientation::Apply)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_rgb_eq(
            &format!("{file} imread"),
            &got,
            &npy(&format!("{}.imread", stem(file))),
        );
    }
}

/// The CAM stage (Pillow's grid) and the mask stage (imread) read one pixel grid: the stored
/// one by default, the EXIF-oriented one when asked, for every file of the goldens.
#[test]
fn both_readers_share_one_grid_whatever_the_exif_orientation() {
    let mut tagged = 0;
    for e in all_images() {
        let file = e["file"].as_str().unwrap();
        let path = image_path(file);
        let stored = load_rgb(&path).unwrap();
        let (pil, orientation) = DecodedImage::open_with(&path, ExifOrientation::Ignore).unwrap();
        let pil = pil.to_rgb8();
        assert_eq!(
            (stored.width, stored.height),
            (pil.width, pil.height),
            "{file}"
        );
        let (applied, o2) = load_rgb_with(&path, ExifOrientation::Apply).unwrap();
        let (pil_applied, _) = DecodedImage::open_with(&path, ExifOrientation::Apply).unwrap();
        assert_eq!(orientation, o2);
        let pil_applied = pil_applied.to_rgb8();
        assert_eq!(
            (applied.width, applied.height),
            (pil_applied.width, pil_applied.height),
            "{file}"
        );
        if e["mode"] == "RGB" && file.ends_with(".jpg") {
            assert_eq!(stored, pil, "{file}");
            assert_eq!(applied, pil_applied, "{file}");
        }
        if orientation != 1 {
            tagged += 1;
            assert_eq!(stored.clone().oriented(orientation), applied, "{file}");
        }
    }
    assert!(tagged > 0, "the goldens hold an EXIF-oriented file");
}

#[test]
fn jpeg_decoding_equals_opencv_decoding() {
    // Pillow and OpenCV both decode with libjpeg-turbo: on the RGB files their pixels agree
    for e in images() {
        let file = e["file"].as_str().unwrap();
        if e["mode"] != "RGB" || !file.ends_with(".jpg") || file.starts_with("exif") {
            continue;
        }
        let pil = DecodedImage::open(&image_path(file)).unwrap().to_rgb8();
        assert_rgb_eq(
            &format!("{file} PIL vs cv2"),
            &pil,
            &npy(&format!("{}.imread", stem(file))),
        );
    }
}

#[test]
fn cv2_resize_linear_f32_matches() {
    let cases = manifest()["cv_resize"].as_array().unwrap().clone();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let g = |k: &str| c[k].as_u64().unwrap() as usize;
        let (sh, sw, dh, dw) = (g("src_h"), g("src_w"), g("dst_h"), g("dst_w"));
        let src = npy(&format!("{name}.src"));
        let got = resize_bilinear_f32(src.f32(), sw, sh, dw, dh);
        let (max, unequal) = compare_f32(&got, npy(&format!("{name}.ipp")).f32());
        println!(
            "{name}: IPP flavour max |diff| {max:e}, {unequal} unequal of {}",
            got.len()
        );
        assert_eq!(unequal, 0, "{name}: differs from cv2.resize (max {max:e})");
        if c["noipp"].as_bool().unwrap() {
            let got = resize_bilinear_f32_without_ipp(src.f32(), sw, sh, dw, dh);
            let (max, unequal) = compare_f32(&got, npy(&format!("{name}.noipp")).f32());
            println!("{name}: no-IPP flavour max |diff| {max:e}, {unequal} unequal");
            assert_eq!(
                unequal, 0,
                "{name}: differs from cv2.resize without IPP (max {max:e})"
            );
        }
    }
}
