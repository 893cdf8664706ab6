//! Bad input from the wild, end to end on the tiny random model (issue "Hardening"): big photos,
//! hostile split ids, EXIF-oriented photos, deflate bombs in CAM files, unwritable outputs,
//! corrupt weights, and the messages of each. Every file is made by the test.

use clip_es::cam_files::CamFile;
use clip_es_testkit::TempDir;
use std::io::Write;
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
    TempDir::new(&format!("harden-{tag}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The binary under test; `CLIP_ES_BIN` runs these tests against another build (an older one, to
/// see them fail).
fn bin() -> PathBuf {
    std::env::var_os("CLIP_ES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_clip-es")))
}

fn clip_es(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// `clip-es cams` with the tiny model on one thread.
fn cams(args: &[&str]) -> Output {
    let mut a = vec![
        "cams",
        "--model",
        s(&model()).to_string().leak(),
        "--threads",
        "1",
    ];
    a.extend_from_slice(args);
    clip_es(&a)
}

/// Runs `clip-es` through `sh` with shell limits set first (`ulimit ...; exec clip-es ARGS`).
#[cfg(target_os = "linux")]
fn clip_es_limited(limits: &str, args: &[&str]) -> Output {
    let mut script = format!("{limits}; exec \"$0\"");
    for i in 0..args.len() {
        script.push_str(&format!(" \"${{{}}}\"", i + 1));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn png_rgb(path: &Path, w: u32, h: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    let mut wr = enc.write_header().unwrap();
    // A smooth gradient, so the image is not flat.
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 90]))
        .collect();
    wr.write_image_data(&data).unwrap();
}

/// A stage's record of its settings (`clip-es-<stage>.json`), written before any work.
fn is_stage_record(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.starts_with("clip-es-") && name.ends_with(".json")
}

/// Every file under `dir`, recursively, stage records aside.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !is_stage_record(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// [normal, 4000x3000, normal]. With a tiny memory budget and no
/// downscaling the photo is named as a failure (size and limit) and the other two are written;
/// at the default `--max-side` all three are written, the photo's CAMs at its own size, under a
/// 4 GB address-space limit. Never an abort.
#[test]
fn a_big_photo_never_takes_the_run_down() {
    let d = tmpdir("big");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    png_rgb(&img.join("big.png"), 4000, 3000);
    std::fs::copy(example("horse.jpg"), img.join("c.jpg")).unwrap();
    std::fs::write(d.join("split.txt"), "a 7\nbig 7 14\nc 12\n").unwrap();
    let split = d.join("split.txt");

    #[cfg(target_os = "linux")]
    {
        let out = d.join("default");
        let o = clip_es_limited(
            "ulimit -v 4000000",
            &[
                "cams",
                "--model",
                s(&model()),
                "--threads",
                "1",
                "--images",
                s(&img),
                "--split",
                s(&split),
                "--out",
                s(&out),
            ],
        );
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        for id in ["a", "big", "c"] {
            assert!(out.join(format!("{id}.npz")).is_file(), "{id}");
        }
        let big = CamFile::read(&out.join("big.npz")).unwrap();
        assert_eq!((big.height, big.width, big.keys.len()), (3000, 4000, 2));
        // The small images are untouched by --max-side: same bytes as without any limit.
        let o = cams(&[
            "--images",
            s(&img),
            "--split",
            s(&split),
            "--out",
            s(&d.join("unlimited")),
            "--max-side",
            "0",
            "--memory-limit",
            "1000000000",
            "--shard",
            "0/2",
        ]);
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        for id in ["a", "c"] {
            assert_eq!(
                std::fs::read(out.join(format!("{id}.npz"))).unwrap(),
                std::fs::read(d.join(format!("unlimited/{id}.npz"))).unwrap(),
                "{id}"
            );
        }
    }
    let out = d.join("tiny-budget");
    let o = cams(&[
        "--images",
        s(&img),
        "--split",
        s(&split),
        "--out",
        s(&out),
        "--max-side",
        "0",
        "--memory-limit",
        "1000",
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(1), "{e}");
    assert!(
        e.contains("big.png") && e.contains("4000x3000") && e.contains("limit of 1000 MB"),
        "{e}"
    );
    assert!(out.join("a.npz").is_file() && out.join("c.npz").is_file());
    assert!(!out.join("big.npz").exists());

    std::fs::remove_dir_all(&d).unwrap();
}

/// Ids that would leave the directories are refused up front, by
/// `cams`, `masks` and `eval` alike, naming the line; a path (a deeplab-pytorch line) names
/// the image of its file stem inside `--images`, never the path itself; nothing is written
/// outside `--out`.
#[test]
fn split_ids_cannot_leave_the_directories() {
    let d = tmpdir("ids");
    let img = d.join("images");
    std::fs::create_dir_all(img.join("sub")).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("sub/b.jpg")).unwrap();
    std::fs::copy(example("chelsea.jpg"), d.join("outside.jpg")).unwrap();
    let abs = d.join("outside");
    // Paths are read as the file stem of their last component (`outside`, `b`), looked up in
    // `--images` only, and the tokens after a path are not labels: those images fail alone
    // (exit 1).
    let abs_line = format!("{} 7", abs.display());
    for (k, (line, id)) in [
        ("../outside 7", "outside"),
        ("sub/b 7", "b"),
        (&abs_line, "outside"),
    ]
    .iter()
    .enumerate()
    {
        let split = d.join(format!("split-path{k}.txt"));
        std::fs::write(&split, format!("a 7\n{line}\n")).unwrap();
        let out = d.join(format!("out-path{k}/cams"));
        let o = cams(&["--images", s(&img), "--split", s(&split), "--out", s(&out)]);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(1), "{line}: {e}");
        assert!(e.contains(&format!("  {id}: ")), "{line}: {e}");
        assert!(out.join("a.npz").is_file(), "{line}");
    }
    let cases = [("..", 2), ("sub\\b 7", 2), ("sub/.. 7", 2), ("/ 7", 2)];
    for (k, (line, at)) in cases.iter().enumerate() {
        let split = d.join(format!("split{k}.txt"));
        std::fs::write(&split, format!("a 7\n{line}\n")).unwrap();
        let out = d.join(format!("out{k}/cams"));
        let o = cams(&["--images", s(&img), "--split", s(&split), "--out", s(&out)]);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(2), "{line}: {e}");
        assert!(
            e.contains(&format!("split{k}.txt:{at}:"))
                && (e.contains("not a plain file name") || e.contains("without a file name")),
            "{line}: {e}"
        );
        let o = clip_es(&[
            "masks",
            "--cams",
            s(&img),
            "--images",
            s(&img),
            "--split",
            s(&split),
            "--out",
            s(&d.join(format!("out{k}/masks"))),
        ]);
        assert_eq!(code(&o), Some(2), "{line}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("split{k}.txt:{at}:")));
        let o = clip_es(&[
            "eval",
            "--cams",
            s(&img),
            "--gt",
            s(&img),
            "--split",
            s(&split),
            "--json",
            s(&d.join(format!("out{k}/eval.json"))),
        ]);
        assert_eq!(code(&o), Some(2), "{line}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("split{k}.txt:{at}:")));
    }
    // Nothing was created anywhere but in the images and the test's own files.
    let mut all: Vec<String> = files_under(&d)
        .iter()
        .map(|p| p.strip_prefix(&d).unwrap().display().to_string())
        .filter(|p| !p.starts_with("split") && !p.starts_with("out-path"))
        .collect();
    all.sort();
    assert_eq!(all, ["images/a.jpg", "images/sub/b.jpg", "outside.jpg"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A JPEG with an EXIF APP1 segment carrying `orientation`, inserted after SOI.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00\x01\x00".to_vec();
    tiff.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0]);
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]);
    let mut seg = b"Exif\0\0".to_vec();
    seg.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((seg.len() + 2) as u16).to_be_bytes());
    out.extend(seg);
    out.extend(&jpeg[2..]);
    out
}

/// Photos tagged with orientations 6 and 3 go through cams and masks on one pixel
/// grid, with one warning; with --apply-exif-orientation given to both, on the turned grid.
#[test]
fn exif_orientation_is_the_same_in_every_stage() {
    let d = tmpdir("exif");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    let jpeg = std::fs::read(example("chelsea.jpg")).unwrap(); // 451 x 300
    std::fs::write(img.join("r6.jpg"), with_orientation(&jpeg, 6)).unwrap();
    std::fs::write(img.join("r3.jpg"), with_orientation(&jpeg, 3)).unwrap();
    std::fs::write(d.join("split.txt"), "r6 7\nr3 7\n").unwrap();
    let split = d.join("split.txt");
    for (tag, extra, size) in [
        ("stored", None, (300u32, 451u32)),
        ("turned", Some("--apply-exif-orientation"), (451, 300)),
    ] {
        let cams_dir = d.join(format!("{tag}/cams"));
        let masks_dir = d.join(format!("{tag}/masks"));
        let mut a = vec![
            "--images",
            s(&img),
            "--split",
            s(&split),
            "--out",
            s(&cams_dir),
        ];
        a.extend(extra);
        let o = cams(&a);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(0), "{e}");
        assert_eq!(
            e.matches("EXIF orientation").count(),
            usize::from(extra.is_none()),
            "{e}"
        );
        let c = CamFile::read(&cams_dir.join("r6.npz")).unwrap();
        assert_eq!((c.height as u32, c.width as u32), size);
        let mut a = vec![
            "masks",
            "--cams",
            s(&cams_dir),
            "--images",
            s(&img),
            "--split",
            s(&split),
            "--out",
            s(&masks_dir),
            "--jobs",
            "1",
        ];
        a.extend(extra);
        let o = clip_es(&a);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(0), "{e}");
        assert_eq!(
            e.matches("EXIF orientation").count(),
            usize::from(extra.is_none()),
            "{e}"
        );
        let m = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(masks_dir.join("r6.png")).unwrap(),
        ))
        .read_info()
        .unwrap()
        .info()
        .size();
        assert_eq!((m.1, m.0), size);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A small deflated CAM file claiming a huge array fails that image only, and the
/// mask stage never inflates more than CAMs of the image's size can take.
#[test]
fn a_deflate_bomb_in_a_cam_file_fails_that_image_only() {
    let d = tmpdir("bomb");
    let img = d.join("images");
    let cams_dir = d.join("cams");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&cams_dir).unwrap();
    png_rgb(&img.join("a.png"), 64, 48);
    png_rgb(&img.join("bomb.png"), 64, 48);
    let good = CamFile {
        keys: vec![3],
        height: 48,
        width: 64,
        attn_highres: vec![half::f16::from_f32(0.5); 64 * 48],
        highres: None,
    };
    good.write_npz(&cams_dir.join("a.npz")).unwrap();
    // keys [3]; attn_highres claims (1, 8000, 8000) float16: 128 MB of zeros, deflated.
    let file = std::fs::File::create(cams_dir.join("bomb.npz")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("keys.npy", opts).unwrap();
    let keys = clip_es_pickle::NdArray {
        dtype: clip_es_pickle::DType::I64,
        shape: vec![1],
        data: 3i64.to_le_bytes().to_vec(),
    };
    zip.write_all(&clip_es_pickle::encode_npy(&keys).unwrap())
        .unwrap();
    zip.start_file("attn_highres.npy", opts).unwrap();
    let header = clip_es_pickle::encode_npy(&clip_es_pickle::NdArray {
        dtype: clip_es_pickle::DType::F16,
        shape: vec![1, 8000, 8000],
        data: vec![],
    });
    // encode_npy checks the data length; write the header by hand instead when it refuses.
    let header = header.unwrap_or_else(|_| {
        let dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 8000, 8000), }";
        let mut h = format!("{dict:<117}\n").into_bytes();
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.append(&mut h);
        out
    });
    zip.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    assert!(std::fs::metadata(cams_dir.join("bomb.npz")).unwrap().len() < 1 << 20);

    let e = CamFile::read_for_image(&cams_dir.join("bomb.npz"), 48, 64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bomb.npz") && e.contains("may take"), "{e}");

    std::fs::write(d.join("split.txt"), "a\nbomb\n").unwrap();
    for (what, out) in [("masks", "masks"), ("eval", "")] {
        let mut a = vec![what, "--cams", s(&cams_dir), "--split"];
        let split = d.join("split.txt");
        a.push(s(&split));
        let out_dir = d.join(out);
        let gt = d.join("gt");
        if what == "masks" {
            a.extend(["--images", s(&img), "--out", s(&out_dir), "--no-crf"]);
        } else {
            std::fs::create_dir_all(&gt).unwrap();
            for id in ["a", "bomb"] {
                let f = std::fs::File::create(gt.join(format!("{id}.png"))).unwrap();
                let mut enc = png::Encoder::new(f, 64, 48);
                enc.set_color(png::ColorType::Grayscale);
                enc.write_header()
                    .unwrap()
                    .write_image_data(&[4u8; 64 * 48])
                    .unwrap();
            }
            a.extend(["--gt", s(&gt)]);
        }
        let o = clip_es_limited_or_plain(&a);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(1), "{what}: {e}");
        assert!(
            e.contains("bomb.npz") && e.contains("may take"),
            "{what}: {e}"
        );
        if what == "masks" {
            assert!(out_dir.join("a.png").is_file());
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Under a 1 GB address-space limit where the platform has `ulimit` (the bomb would need more).
fn clip_es_limited_or_plain(args: &[&str]) -> Output {
    #[cfg(target_os = "linux")]
    return clip_es_limited("ulimit -v 1000000", args);
    #[cfg(not(target_os = "linux"))]
    return clip_es(args);
}

/// `--out` that is a file, or a directory that cannot be written, is reported before
/// the model is loaded.
#[test]
fn unwritable_outputs_are_found_before_the_work() {
    let d = tmpdir("out");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    std::fs::write(d.join("split.txt"), "a 7\n").unwrap();
    std::fs::write(d.join("file"), "x").unwrap();
    let split = d.join("split.txt");
    let o = cams(&[
        "--images",
        s(&img),
        "--split",
        s(&split),
        "--out",
        s(&d.join("file")),
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(2), "{e}");
    assert!(e.contains("file: exists and is not a directory"), "{e}");
    assert!(!e.contains("ready in"), "the model was loaded first: {e}");
    // A disk that takes nothing more: every write fails (file size limit 0, SIGXFSZ ignored).
    #[cfg(target_os = "linux")]
    {
        let out = d.join("full");
        std::fs::create_dir_all(&out).unwrap();
        let o = clip_es_limited(
            "trap '' XFSZ; ulimit -f 0",
            &[
                "cams",
                "--model",
                s(&model()),
                "--images",
                s(&img),
                "--split",
                s(&split),
                "--out",
                s(&out),
            ],
        );
        let e = stderr(&o);
        assert_eq!(code(&o), Some(2), "{e}");
        assert!(e.contains("cannot write into the directory"), "{e}");
        assert!(!e.contains("ready in"), "the model was loaded first: {e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A NaN in one weight is refused at load, naming the tensor.
#[test]
fn a_nan_weight_is_refused_at_load() {
    let d = tmpdir("nan");
    let m = d.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(model()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, m.join(p.file_name().unwrap())).unwrap();
    }
    let st = m.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["vision_model.encoder.layers.3.mlp.fc1.weight"];
    assert_eq!(t["dtype"], "F16");
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize + 2 * 5;
    bytes[at..at + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    std::fs::write(d.join("split.txt"), "a 7\n").unwrap();
    let o = clip_es(&[
        "cams",
        "--model",
        s(&m),
        "--images",
        s(&img),
        "--split",
        s(&d.join("split.txt")),
        "--out",
        s(&d.join("out")),
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(2), "{e}");
    assert!(
        e.contains("visual.transformer.resblocks.3.mlp.c_fc.weight")
            && e.contains("1 non-finite value(s) (first: NaN"),
        "{e}"
    );
    assert!(!d.join("out/a.npz").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Split files with a byte-order mark, bad bytes, nothing in them; which label source
/// wins; a missing image directory; each message said once.
#[test]
fn split_files_and_messages() {
    let d = tmpdir("msg");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    let split_path = d.join("split.txt");
    let out_path = d.join("out");
    let run = |split: &[u8], extra: &[&str]| {
        std::fs::write(&split_path, split).unwrap();
        let _ = std::fs::remove_dir_all(&out_path);
        let mut a = vec![
            "--images",
            s(&img),
            "--split",
            s(&split_path),
            "--out",
            s(&out_path),
        ];
        a.extend_from_slice(extra);
        cams(&a)
    };
    // A byte-order mark is not part of the first id.
    let o = run(b"\xEF\xBB\xBFa 7\n", &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(d.join("out/a.npz").is_file());
    // Not UTF-8: the line is named.
    let o = run(b"a 7\nb\xFF 7\n", &[]);
    assert_eq!(code(&o), Some(2));
    assert!(
        stderr(&o).contains("split.txt:2: not UTF-8"),
        "{}",
        stderr(&o)
    );
    // Empty.
    for empty in [&b""[..], b"\n  \n"] {
        let o = run(empty, &[]);
        assert_eq!(code(&o), Some(2));
        assert!(stderr(&o).contains("no image ids"), "{}", stderr(&o));
    }
    // Labels on the split and VOC annotations: the annotations win, and it is said.
    std::fs::create_dir_all(d.join("ann")).unwrap();
    std::fs::write(
        d.join("ann/a.xml"),
        "<annotation><object><name>dog</name></object></annotation>",
    )
    .unwrap();
    let o = run(b"a 7\n", &["--annotations", s(&d.join("ann"))]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("they are ignored: the labels come from the VOC annotations"),
        "{}",
        stderr(&o)
    );
    assert_eq!(CamFile::read(&d.join("out/a.npz")).unwrap().keys, vec![11]);
    // A missing image directory: once, up front.
    std::fs::write(d.join("split.txt"), "a 7\nb 7\n").unwrap();
    let o = cams(&[
        "--images",
        s(&d.join("nope")),
        "--split",
        s(&d.join("split.txt")),
        "--out",
        s(&d.join("out2")),
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(2), "{e}");
    assert_eq!(e.matches("nope").count(), 1, "{e}");
    // A broken config: the JSON error once.
    let m = d.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(model()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, m.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(m.join("config.json"), "{ not json").unwrap();
    let o = clip_es(&[
        "cams",
        "--model",
        s(&m),
        "--images",
        s(&img),
        "--split",
        s(&d.join("split.txt")),
        "--out",
        s(&d.join("out3")),
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(2), "{e}");
    assert_eq!(e.matches("column").count(), 1, "{e}");
    assert_eq!(e.matches("config.json").count(), 1, "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A full disk while writing a CAM file is one message per image, said once, and no
/// stray line from the zip writer.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_reported_once_per_image() {
    let d = tmpdir("full");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(example("chelsea.jpg"), img.join("a.jpg")).unwrap();
    std::fs::write(d.join("split.txt"), "a 7\n").unwrap();
    // Files may hold 8 KiB: the probe and the stage's record of its settings fit, the CAM
    // file does not.
    let o = clip_es_limited(
        "trap '' XFSZ; ulimit -f 8",
        &[
            "cams",
            "--model",
            s(&model()),
            "--images",
            s(&img),
            "--split",
            s(&d.join("split.txt")),
            "--out",
            s(&d.join("out")),
        ],
    );
    let e = stderr(&o);
    assert_eq!(code(&o), Some(1), "{e}");
    assert!(!e.contains("ZipWriter"), "{e}");
    for line in e.lines().filter(|l| l.contains("a.npz")) {
        assert_eq!(line.matches("os error").count(), 1, "{e}");
    }
    assert!(e.contains("a.npz"), "{e}");
    assert_eq!(files_under(&d.join("out")), Vec::<PathBuf>::new());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Class ids beyond the run's classes are refused where they enter: a class file of
/// more than 254 classes when parsed (before the model loads), a CAM key beyond the classes
/// given to `masks` (and `run`) for that image, instead of a label the evaluation rejects.
#[test]
fn class_ids_stay_within_the_classes() {
    let d = tmpdir("classes");
    let img = d.join("images");
    std::fs::create_dir_all(&img).unwrap();
    png_rgb(&img.join("a.png"), 64, 48);
    png_rgb(&img.join("b.png"), 64, 48);
    std::fs::write(d.join("split.txt"), "a 1\nb 1\n").unwrap();
    let names: String = (0..255).map(|i| format!("class{i}\n")).collect();
    std::fs::write(d.join("classes.txt"), names).unwrap();
    let o = cams(&[
        "--dataset",
        s(&d.join("classes.txt")),
        "--images",
        s(&img),
        "--split",
        s(&d.join("split.txt")),
        "--out",
        s(&d.join("cams")),
    ]);
    let e = stderr(&o);
    assert_eq!(code(&o), Some(2), "{e}");
    assert!(
        e.contains("255 classes") && e.contains("at most 254"),
        "{e}"
    );
    assert!(!e.contains("ready in"), "{e}");

    let cams_dir = d.join("cams2");
    for (id, key) in [("a", 14), ("b", 25)] {
        CamFile {
            keys: vec![key],
            height: 48,
            width: 64,
            attn_highres: vec![half::f16::from_f32(0.99); 64 * 48],
            highres: None,
        }
        .write_npz(&cams_dir.join(format!("{id}.npz")))
        .unwrap();
    }
    let split = d.join("split.txt");
    let masks = |out: &Path, classes: Option<&str>| {
        let mut a = vec![
            "masks",
            "--cams",
            s(&cams_dir),
            "--images",
            s(&img),
            "--split",
            s(&split),
            "--no-crf",
        ];
        a.extend(["--out", s(out)]);
        if let Some(c) = classes {
            a.extend(["--classes", c]);
        }
        clip_es(&a)
    };
    let o = masks(&d.join("voc"), Some("voc"));
    let e = stderr(&o);
    assert_eq!(code(&o), Some(1), "{e}");
    assert!(
        e.contains("b.npz") && e.contains("class key 25 does not fit 21 classes"),
        "{e}"
    );
    assert!(d.join("voc/a.png").is_file() && !d.join("voc/b.png").exists());
    // A COCO-sized run may use key 25.
    let o = masks(&d.join("coco"), Some("coco"));
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}
