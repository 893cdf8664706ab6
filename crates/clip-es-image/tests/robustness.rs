//! Corrupt, truncated and odd inputs: always an error naming the file (or a valid image), never
//! a panic.

mod common;

use std::path::PathBuf;

use clip_es_image::{load_rgb, DecodedImage, ImageError, PilMode};
use clip_es_testkit::TempDir;
use common::image_path;

/// Writes a test's input files into its directory.
trait WriteInput {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf;
}

impl WriteInput for TempDir {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

const FILES: &[&str] = &[
    "rgb_q92_420.jpg",
    "rgb_progressive.jpg",
    "gray.jpg",
    "cmyk.jpg",
    "rgb_411_rst.jpg",
    "rgb.png",
    "rgba.png",
    "palette_trns.png",
    "gray16.png",
    "bilevel.png",
];

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let dir = TempDir::new("image-trunc");
    for file in FILES {
        let bytes = std::fs::read(image_path(file)).unwrap();
        let n = bytes.len();
        for cut in [0, 1, 3, 8, 30, n / 4, n / 2, 3 * n / 4, n - 40] {
            let name = format!("cut{cut}_{file}");
            let path = dir.write(&name, &bytes[..cut]);
            let err = DecodedImage::open(&path)
                .expect_err(&format!("{file} cut at {cut} of {n} decoded"));
            assert!(err.to_string().contains(&name), "{err}");
            let err = load_rgb(&path).expect_err(&format!("{file} cut at {cut}: imread"));
            assert!(err.to_string().contains(&name), "{err}");
        }
        if file.ends_with(".jpg") {
            // Pillow also refuses a JPEG without its end-of-image marker
            let path = dir.write(&format!("noeoi_{file}"), &bytes[..n - 2]);
            let err = DecodedImage::open(&path).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    for file in FILES {
        let original = std::fs::read(image_path(file)).unwrap();
        for _ in 0..60 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] ^= 1 << (next() % 8);
            }
            match DecodedImage::from_bytes(&bytes) {
                Ok(img) => {
                    ok += 1;
                    let n = img.width() as usize * img.height() as usize;
                    let len = if img.mode() == PilMode::I16 {
                        img.samples_i16().len()
                    } else {
                        img.samples().len()
                    };
                    assert_eq!(len, n * img.mode().channels());
                    // a damaged but decodable image must still resize and normalise
                    let t = img.clip_input_for_patch(16).unwrap();
                    assert!(t.data.iter().all(|v| v.is_finite()));
                }
                Err(e) => {
                    err += 1;
                    assert!(e.to_string().contains("<memory>"), "{e}");
                }
            }
        }
    }
    println!("damaged files: {ok} decoded, {err} rejected");
    assert!(err > 0);
}

#[test]
fn missing_unknown_and_empty_files() {
    let missing = PathBuf::from("/nonexistent/dir/photo.jpg");
    match DecodedImage::open(&missing) {
        Err(ImageError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let err = load_rgb(&missing).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/dir/photo.jpg"),
        "{err}"
    );

    let dir = TempDir::new("image-odd");
    let text = dir.write("notes.jpg", b"this is not an image at all\n");
    let err = DecodedImage::open(&text).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("notes.jpg"), "{err}");
    assert!(load_rgb(&text).is_err());

    let empty = dir.write("empty.png", b"");
    assert!(DecodedImage::open(&empty)
        .unwrap_err()
        .to_string()
        .contains("empty.png"));

    // a JPEG header claiming 65000 x 65000 pixels and then nothing
    let mut huge = std::fs::read(image_path("rgb_q92_420.jpg")).unwrap();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    let err = DecodedImage::from_bytes(&huge).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit") || err.to_string().contains("truncated"),
        "{err}"
    );
}

#[test]
fn invalid_sizes_are_errors() {
    let img = DecodedImage::open(&image_path("rgb.png")).unwrap();
    assert!(img.clip_input(0, 16).is_err());
    assert!(img.clip_input_for_patch(0).is_err());
    assert!(img.resize_bicubic(5, 0).is_err());
    assert!(DecodedImage::from_raw(2, 2, PilMode::Rgb, vec![0; 11], None).is_err());
    assert!(DecodedImage::from_raw(2, 2, PilMode::P, vec![0; 4], None).is_err());
    assert!(DecodedImage::from_i16(2, 2, vec![0; 3]).is_err());
}

/// Writes a PNG of the given colour type at 16 bits per sample (big-endian, as PNG stores it).
fn png16(path: &std::path::Path, w: u32, h: u32, colour: png::ColorType, samples: &[u16]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(colour);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut writer = enc.write_header().unwrap();
    let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
    writer.write_image_data(&bytes).unwrap();
}

/// A 16-bit PNG (grey, grey+alpha, RGB, RGBA) reaches CLIP (Pillow's decoding path) as the
/// same 8-bit picture the CRF and the pictures get from OpenCV's path: each sample's high
/// byte. Pillow would saturate 16-bit grey to white.
#[test]
fn sixteen_bit_pngs_are_scaled_to_eight_bits_for_every_stage() {
    let dir = TempDir::new("image-png16");
    let (w, h) = (7u32, 5u32);
    let value = |i: usize| ((i * 9973) % 65536) as u16;
    for (name, colour, channels) in [
        ("grey16.png", png::ColorType::Grayscale, 1),
        ("grey_alpha16.png", png::ColorType::GrayscaleAlpha, 2),
        ("rgb16.png", png::ColorType::Rgb, 3),
        ("rgba16.png", png::ColorType::Rgba, 4),
    ] {
        let n = (w * h) as usize * channels;
        let samples: Vec<u16> = (0..n).map(value).collect();
        let path = dir.join(name);
        png16(&path, w, h, colour, &samples);
        let expected: Vec<u8> = samples
            .chunks_exact(channels)
            .flat_map(|px| {
                let high = |v: u16| (v >> 8) as u8;
                if channels <= 2 {
                    [high(px[0]); 3]
                } else {
                    [high(px[0]), high(px[1]), high(px[2])]
                }
            })
            .collect();
        let clip_view = DecodedImage::open(&path).unwrap().to_rgb8();
        let crf_view = load_rgb(&path).unwrap();
        assert_eq!(clip_view.data, expected, "{name}: CLIP's view");
        assert_eq!(crf_view.data, expected, "{name}: OpenCV's view");
        assert!(
            clip_view.data.iter().any(|&v| v < 255),
            "{name}: not a white picture"
        );
    }
}
