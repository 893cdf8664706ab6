//! `clip-es segment` end to end on the tiny random 10-block model: the same masks as
//! `cams` + `masks`, every promised file for each way of naming classes, and clear errors.

use clip_es::masks::read_label_png;
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
    TempDir::new(&format!("segment-{tag}"))
}

fn clip_es(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-es"))
        .args(args)
        .output()
        .unwrap()
}

fn segment(args: &[&str]) -> Output {
    let m = model();
    let mut all = vec!["segment", "--model", m.to_str().unwrap(), "--threads", "1"];
    all.extend_from_slice(args);
    clip_es(&all)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// A small copy of an example photo (nearest-neighbour), saved as PNG: keeps the tests fast.
fn small_copy(name: &str, dest: &Path, w: u32, h: u32) {
    let img = clip_es_image::load_rgb(&example(name)).unwrap();
    let mut c = clip_es::viz::Canvas::new(w as usize, h as usize, [0, 0, 0]);
    for y in 0..h {
        for x in 0..w {
            let p = img.pixel(x * img.width / w, y * img.height / h);
            c.set(x as usize, y as usize, p);
        }
    }
    std::fs::write(dest, c.encode_png().unwrap()).unwrap();
}

fn voc_xml(names: &[&str]) -> String {
    let objects: String = names
        .iter()
        .map(|n| format!("<object><name>{n}</name></object>"))
        .collect();
    format!("<annotation>{objects}</annotation>")
}

/// For every image of a VOC-style set, `segment --dataset voc --classes <its
/// labels>` writes the same label mask as `cams` + `masks`.
#[test]
fn segment_masks_equal_cams_plus_masks() {
    let d = tmpdir("same");
    let set: [(&str, &str, u32, u32, &[&str]); 4] = [
        ("chelsea", "chelsea.jpg", 90, 60, &["cat", "sofa"]),
        ("astronaut", "astronaut.jpg", 64, 64, &["person"]),
        (
            "camera",
            "camera.jpg",
            70,
            70,
            &["person", "tvmonitor", "bottle"],
        ),
        ("horse", "horse.jpg", 100, 66, &["horse", "person"]),
    ];
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::create_dir_all(d.join("ann")).unwrap();
    let mut split = String::new();
    for (id, file, w, h, labels) in &set {
        small_copy(file, &d.join(format!("images/{id}.png")), *w, *h);
        std::fs::write(d.join(format!("ann/{id}.xml")), voc_xml(labels)).unwrap();
        split.push_str(&format!("{id}\n"));
    }
    std::fs::write(d.join("split.txt"), split).unwrap();
    let s = |p: &str| d.join(p).to_str().unwrap().to_string();
    let m = model();
    ok(&clip_es(&[
        "cams",
        "--model",
        m.to_str().unwrap(),
        "--threads",
        "1",
        "--dataset",
        "voc",
        "--images",
        &s("images"),
        "--annotations",
        &s("ann"),
        "--split",
        &s("split.txt"),
        "--out",
        &s("cams"),
    ]));
    ok(&clip_es(&[
        "masks",
        "--cams",
        &s("cams"),
        "--images",
        &s("images"),
        "--split",
        &s("split.txt"),
        "--out",
        &s("masks"),
        "--jobs",
        "1",
    ]));
    for (id, _, w, h, labels) in &set {
        let out = d.join(format!("seg-{id}"));
        ok(&segment(&[
            &s(&format!("images/{id}.png")),
            "--dataset",
            "voc",
            "--classes",
            &labels.join(","),
            "--out",
            out.to_str().unwrap(),
        ]));
        let a = read_label_png(&d.join(format!("masks/{id}.png"))).unwrap();
        let b = read_label_png(&out.join(format!("{id}.png"))).unwrap();
        assert_eq!((b.width, b.height), (*w as usize, *h as usize));
        assert_eq!(a, b, "{id}: segment and cams + masks differ");
        // The same bytes too (both grayscale PNGs of the same values).
        assert_eq!(
            std::fs::read(d.join(format!("masks/{id}.png"))).unwrap(),
            std::fs::read(out.join(format!("{id}.png"))).unwrap()
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{id}.json"))).unwrap())
                .unwrap();
        let ids: Vec<u64> = summary["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        let voc = clip_es::classes::ClassSet::voc();
        let expect: Vec<u64> = labels
            .iter()
            .map(|l| voc.resolve(l).unwrap() as u64 + 1)
            .collect();
        assert_eq!(ids, expect, "{id}: preset ids");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

fn png_size(path: &Path) -> (u32, u32) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let r = dec.read_info().unwrap();
    (r.info().width, r.info().height)
}

/// Checks every promised file of one image and returns its JSON summary.
fn check_outputs(out: &Path, stem: &str, size: (u32, u32)) -> serde_json::Value {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{stem}.json"))).unwrap()).unwrap();
    let mask = read_label_png(&out.join(format!("{stem}.png"))).unwrap();
    assert_eq!((mask.width as u32, mask.height as u32), size);
    assert_eq!(png_size(&out.join(format!("{stem}.overlay.png"))), size);
    let classes = summary["classes"].as_array().unwrap();
    assert!(!classes.is_empty(), "{stem}: no classes");
    let heat = summary["files"]["heat_maps"].as_array().unwrap();
    assert_eq!(heat.len(), classes.len());
    for h in heat {
        assert_eq!(png_size(&out.join(h.as_str().unwrap())), size);
    }
    let mut total = 0.0;
    for c in classes {
        let f = c["pixel_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f));
        total += f;
        let p = c["clip_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        let m = c["mean_cam"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m));
        // Label values in the mask are the classes' ids (and 0 / 255).
        assert_eq!(c["colour"].as_array().unwrap().len(), 3);
    }
    assert!(
        total <= 1.0 + 1e-9,
        "{stem}: class fractions sum to {total}"
    );
    let bg = summary["background_fraction"].as_f64().unwrap();
    let unc = summary["unconfident_fraction"].as_f64().unwrap();
    assert!((total + bg + unc - 1.0).abs() < 1e-9);
    let ids: Vec<u8> = classes
        .iter()
        .map(|c| c["id"].as_u64().unwrap() as u8)
        .collect();
    assert!(mask
        .labels
        .iter()
        .all(|&l| l == 0 || l == 255 || ids.contains(&l)));
    assert_eq!(summary["exif_orientation"], 1);
    summary
}

#[test]
fn free_classes_preset_tags_vocabulary_and_folders() {
    let d = tmpdir("e2e");
    let photos = d.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    small_copy("chelsea.jpg", &photos.join("cat.png"), 96, 64);
    std::fs::copy(example("horse.jpg"), photos.join("horse.jpg")).unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let cat = photos.join("cat.png");
    let cat = cat.to_str().unwrap();

    // Free classes with synonyms: ids 1..k in order.
    let out = d.join("free");
    let o = segment(&[
        cat,
        "--classes",
        "cat,sofa;couch,person with clothes;people",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let s = check_outputs(&out, "cat", (96, 64));
    let names: Vec<&str> = s["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cat", "sofa", "person with clothes"]);
    assert_eq!(s["classes"][1]["prompt"], "sofa,couch");
    assert_eq!(s["classes"][2]["id"], 3);
    assert!(String::from_utf8_lossy(&o.stdout).contains("cat.overlay.png"));
    assert!(out.join("cat.heat.2-sofa.png").is_file());

    // A preset without --classes: tags from its classes, preset ids.
    let out = d.join("preset-tags");
    ok(&segment(&[
        cat,
        "--dataset",
        "voc",
        "--no-crf",
        "--out",
        out.to_str().unwrap(),
    ]));
    let s = check_outputs(&out, "cat", (96, 64));
    assert!(s["tags"]["chosen"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(s["crf"], false);

    // No classes at all: the default vocabulary (VOC + COCO).
    let out = d.join("tags");
    ok(&segment(&[
        cat,
        "--max-tags",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    let s = check_outputs(&out, "cat", (96, 64));
    let chosen = s["tags"]["chosen"].as_array().unwrap();
    assert!((1..=2).contains(&chosen.len()));
    assert_eq!(s["tags"]["best"].as_array().unwrap().len(), 10);

    // A vocabulary file.
    let vocab = d.join("vocab.txt");
    std::fs::write(&vocab, "cat\nsofa: sofa,couch\nlamp\n").unwrap();
    let out = d.join("vocab");
    ok(&segment(&[
        cat,
        "--vocabulary",
        vocab.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let s = check_outputs(&out, "cat", (96, 64));
    for c in s["classes"].as_array().unwrap() {
        assert!(["cat", "sofa", "lamp"].contains(&c["name"].as_str().unwrap()));
    }

    // --tags-only: printed, and tags.json.
    let out = d.join("tags-only");
    let o = segment(&[
        cat,
        "--vocabulary",
        vocab.to_str().unwrap(),
        "--tags-only",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("cat.png: "), "{text}");
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tags.json")).unwrap()).unwrap();
    assert_eq!(t["images"].as_array().unwrap().len(), 1);
    assert!(!out.join("cat.png").exists());

    // A folder: every image in it (the text file is not one), with a scale/flip ensemble.
    let out = d.join("folder");
    ok(&segment(&[
        photos.to_str().unwrap(),
        "--classes",
        "cat,horse",
        "--scales",
        "1.0,0.5",
        "--flip",
        "--out",
        out.to_str().unwrap(),
    ]));
    check_outputs(&out, "cat", (96, 64));
    let s = check_outputs(&out, "horse", (400, 328));
    assert_eq!(s["flip"], true);
    assert_eq!(s["scales"], serde_json::json!([1.0, 0.5]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_class_lists_and_inputs_are_clear_errors() {
    let d = tmpdir("errors");
    let img = d.join("a.png");
    small_copy("chelsea.jpg", &img, 48, 32);
    let img = img.to_str().unwrap();
    let out = d.join("out");
    let out = out.to_str().unwrap();
    let many: Vec<String> = (0..255).map(|i| format!("thing {i}")).collect();
    let many = many.join(",");
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: [(Vec<&str>, &str); 7] = [
        (
            vec![img, "--classes", "cat,,dog", "--out", out],
            "empty class name",
        ),
        (
            vec![img, "--classes", "Cat, cat", "--out", out],
            "`Cat` and `cat` name the same class",
        ),
        (vec![img, "--classes", "", "--out", out], "empty class name"),
        (
            vec![img, "--classes", "cat,dog,cat", "--out", out],
            "`cat` is given twice",
        ),
        (
            vec![
                img,
                "--dataset",
                "voc",
                "--classes",
                "cat,kitty",
                "--out",
                out,
            ],
            "`kitty` is not a class",
        ),
        (vec![img, "--classes", &many, "--out", out], "at most 254"),
        (
            vec![empty.to_str().unwrap(), "--classes", "cat", "--out", out],
            "no images",
        ),
    ];
    for (args, message) in cases.iter() {
        let o = segment(args);
        assert_eq!(o.status.code(), Some(2), "{message}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(message),
            "expected {message:?} in {}",
            stderr(&o)
        );
    }
    // A bad image among good ones is reported and skipped; the good one is written.
    std::fs::write(d.join("broken.jpg"), b"not a jpeg").unwrap();
    let o = segment(&[
        img,
        d.join("broken.jpg").to_str().unwrap(),
        "--classes",
        "cat",
        "--out",
        out,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("broken.jpg"));
    assert!(Path::new(out).join("a.png").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A phone photo stored sideways (EXIF orientation 6 in a PNG eXIf chunk) is segmented upright:
/// every output has the turned size and the JSON says which orientation was applied.
#[test]
fn exif_orientation_is_applied_everywhere() {
    let d = tmpdir("exif");
    let plain = d.join("plain.png");
    small_copy("horse.jpg", &plain, 64, 40);
    let png = std::fs::read(&plain).unwrap();
    // Insert eXIf (TIFF, little endian, IFD0 with Orientation = 6) right after IHDR.
    let tiff: [u8; 26] = [
        b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut chunk = (tiff.len() as u32).to_be_bytes().to_vec();
    let mut body = b"eXIf".to_vec();
    body.extend_from_slice(&tiff);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    let ihdr_end = 8 + 8 + 13 + 4;
    let mut rotated = png[..ihdr_end].to_vec();
    rotated.extend_from_slice(&chunk);
    rotated.extend_from_slice(&png[ihdr_end..]);
    let photo = d.join("phone.png");
    std::fs::write(&photo, rotated).unwrap();
    assert_eq!(
        clip_es_image::exif_orientation(&std::fs::read(&photo).unwrap()),
        6
    );

    let out = d.join("out");
    ok(&segment(&[
        photo.to_str().unwrap(),
        "--classes",
        "horse",
        "--out",
        out.to_str().unwrap(),
    ]));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("phone.json")).unwrap()).unwrap();
    assert_eq!(summary["exif_orientation"], 6);
    assert_eq!(summary["orientation_applied"], true);
    assert_eq!(
        (summary["width"].as_u64(), summary["height"].as_u64()),
        (Some(40), Some(64))
    );
    let mask = read_label_png(&out.join("phone.png")).unwrap();
    assert_eq!((mask.width, mask.height), (40, 64));
    assert_eq!(png_size(&out.join("phone.overlay.png")), (40, 64));
    assert_eq!(png_size(&out.join("phone.heat.1-horse.png")), (40, 64));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A photo whose CAMs fit the memory limit but whose full-size CRF does not fails with a
/// message naming it, its estimate and `--no-crf`, said once; a small photo in the same call is
/// segmented.
#[test]
fn a_photo_over_the_memory_limit_fails_naming_it() {
    let dir = tmpdir("memory");
    let big = dir.join("big.png");
    // 2000x1500: ViT input 1024x768 (about 0.6 GB of CAM work), CRF about 0.94 GB.
    let (w, h) = (2000u32, 1500u32);
    let mut px = vec![0u8; (w * h * 3) as usize];
    for (i, p) in px.chunks_exact_mut(3).enumerate() {
        let x = (i as u32 % w) as u8;
        p.copy_from_slice(&[x, 255 - x, 128]);
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&px).unwrap();
    }
    std::fs::write(&big, bytes).unwrap();
    let small = dir.join("small.png");
    small_copy("chelsea.jpg", &small, 120, 80);
    let out = dir.join("out");
    let o = segment(&[
        big.to_str().unwrap(),
        small.to_str().unwrap(),
        "--classes",
        "cat",
        "--out",
        out.to_str().unwrap(),
        "--memory-limit",
        "800",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with(big.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("2000x1500")
            && line.contains("pseudo mask needs about")
            && line.contains("over the limit of 800 MB")
            && line.contains("--no-crf"),
        "{line}"
    );
    assert_eq!(line.matches(big.to_str().unwrap()).count(), 1, "{line}");
    assert!(out.join("small.json").is_file(), "{err}");
    assert!(!out.join("big.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Photos whose output names overlap (`x.jpg` writes `x.overlay.png`, the mask of
/// `x.overlay.jpg`) are refused before any work, naming both, and nothing is written.
#[test]
fn outputs_of_two_photos_never_collide() {
    let d = tmpdir("collide");
    let photos = d.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    small_copy("chelsea.jpg", &photos.join("x.jpg"), 48, 32);
    small_copy("horse.jpg", &photos.join("x.overlay.jpg"), 48, 32);
    small_copy("camera.jpg", &photos.join("x.heat.1-cat.jpg"), 48, 32);
    let out = d.join("out");
    let o = segment(&[
        photos.to_str().unwrap(),
        "--classes",
        "cat",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("would both write"), "{}", stderr(&o));
    assert!(stderr(&o).contains("x.jpg"), "{}", stderr(&o));
    assert!(!out.join("x.png").exists() && !out.join("x.overlay.png").exists());
    // Label-free: the heat map of any candidate counts (`x.heat.8-cat.png` of `x.jpg`).
    let tagged = d.join("tagged");
    std::fs::create_dir_all(&tagged).unwrap();
    small_copy("chelsea.jpg", &tagged.join("x.jpg"), 48, 32);
    small_copy("camera.jpg", &tagged.join("x.heat.8-cat.jpg"), 48, 32);
    let o = segment(&[
        tagged.to_str().unwrap(),
        "--dataset",
        "voc",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("x.heat.8-cat.png"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--out` that is an input folder (or inside one), or an output that is an input photo, is
/// refused before any work; the photos are untouched.
#[test]
fn outputs_never_replace_inputs() {
    let d = tmpdir("in-place");
    let photos = d.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    small_copy("chelsea.jpg", &photos.join("cat.png"), 48, 32);
    let before = snapshot(&photos);
    let p = photos.to_str().unwrap();
    let sub = photos.join("seg");
    let cat = photos.join("cat.png");
    for (args, message) in [
        (vec![p, "--out", p], "inside"),
        (vec![p, "--out", sub.to_str().unwrap()], "inside"),
        (
            vec![cat.to_str().unwrap(), "--out", p],
            "would replace this input photo",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--classes", "cat"]);
        let o = segment(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert_eq!(snapshot(&photos), before, "{args:?}");
        assert!(!sub.exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A thin panorama: the default --max-side would shrink 3000x40 to one patch row. Its CAMs
/// are computed on at least its own height, and they are not all zero (`cams` and `segment`).
#[test]
fn a_thin_panorama_keeps_its_height_for_the_vit() {
    let d = tmpdir("panorama");
    std::fs::create_dir_all(d.join("images")).unwrap();
    let (w, h) = (3000, 40);
    small_copy("chelsea.jpg", &d.join("images/pano.png"), w, h);
    std::fs::write(d.join("split.txt"), "pano cat\n").unwrap();
    let s = |p: &str| d.join(p).to_str().unwrap().to_string();
    let m = model();
    ok(&clip_es(&[
        "cams",
        "--model",
        m.to_str().unwrap(),
        "--threads",
        "1",
        "--dataset",
        "voc",
        "--images",
        &s("images"),
        "--split",
        &s("split.txt"),
        "--out",
        &s("cams"),
    ]));
    let cams = clip_es::cam_files::CamFile::read(&d.join("cams/pano.npz")).unwrap();
    assert_eq!((cams.width, cams.height), (w as usize, h as usize));
    let max = cams
        .attn_highres
        .iter()
        .map(|v| v.to_f32())
        .fold(0f32, f32::max);
    assert!(max > 0.0, "cams: all-zero CAMs");
    let o = segment(&[
        &s("images/pano.png"),
        "--classes",
        "cat",
        "--out",
        &s("seg"),
    ]);
    ok(&o);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("seg/pano.json")).unwrap()).unwrap();
    let mean = summary["classes"][0]["mean_cam"].as_f64().unwrap();
    assert!(mean > 0.0, "segment: all-zero CAMs");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A photo whose files cannot all be written leaves none of them (here a folder stands where
/// its summary goes); the other photo is written; exit 1 naming the file.
#[test]
fn a_photo_that_fails_leaves_none_of_its_files() {
    let d = tmpdir("all-or-none");
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    small_copy("chelsea.jpg", &a, 48, 32);
    small_copy("horse.jpg", &b, 48, 32);
    let out = d.join("out");
    std::fs::create_dir_all(out.join("a.json")).unwrap();
    std::fs::write(out.join("a.json/keep"), "user file").unwrap();
    let o = segment(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--classes",
        "cat,dog",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("a.json"), "{}", stderr(&o));
    let left: Vec<String> = snapshot(&out).into_iter().map(|(n, _)| n).collect();
    assert!(
        left.iter().all(|n| n.starts_with("b.")),
        "files of the failed photo (or temporary files) left: {left:?}"
    );
    check_outputs(&out, "b", (48, 32));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--out` naming a file says that it must be a folder, before the model is loaded.
#[test]
fn out_naming_a_file_must_be_a_folder() {
    let d = tmpdir("out-file");
    let img = d.join("a.png");
    small_copy("chelsea.jpg", &img, 48, 32);
    std::fs::write(d.join("afile"), "x").unwrap();
    let o = clip_es(&[
        "segment",
        img.to_str().unwrap(),
        "--classes",
        "cat",
        "--model",
        d.join("no-such-model").to_str().unwrap(),
        "--out",
        d.join("afile").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("must be a folder"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A rerun with other classes replaces the photo's heat maps: the old classes' maps go, files
/// that segment did not write stay.
#[test]
fn a_rerun_with_other_classes_leaves_no_stale_heat_maps() {
    let d = tmpdir("rerun-classes");
    let img = d.join("a.png");
    small_copy("chelsea.jpg", &img, 48, 32);
    let out = d.join("out");
    let o = out.to_str().unwrap();
    ok(&segment(&[
        img.to_str().unwrap(),
        "--classes",
        "cat,dog",
        "--out",
        o,
    ]));
    assert!(out.join("a.heat.2-dog.png").is_file());
    std::fs::write(out.join("a.heat.9-mine.png"), "not segment's").unwrap();
    ok(&segment(&[
        img.to_str().unwrap(),
        "--classes",
        "cat",
        "--out",
        o,
    ]));
    assert!(out.join("a.heat.1-cat.png").is_file());
    assert!(
        !out.join("a.heat.2-dog.png").exists(),
        "stale heat map left"
    );
    assert!(out.join("a.heat.9-mine.png").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}
