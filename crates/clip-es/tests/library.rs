//! The library entry points as a Python module or another front end calls them: the stages'
//! `run` with `Silent` progress, and the per-image functions (`Cams::image`,
//! `masks::pseudo_mask`) giving the same results as the stages.

use clip_es::cam_files::CamFile;
use clip_es::cams::{CamSettings, CamsConfig, DatasetConfig};
use clip_es::eval::{EvalConfig, Prediction};
use clip_es::masks::{pseudo_mask, read_label_png, KernelCache, MaskOptions, MasksConfig};
use clip_es::{Cams, ClassSet, Silent};
use clip_es_image::DecodedImage;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-es-lib-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn stage_entry_points_and_per_image_functions_agree() {
    let d = tmpdir("stages");
    let ex = root().join("../../examples");
    let model = root().join("../clip-es-model/tests/fixtures/tiny-deep-hf");
    let settings = CamSettings {
        box_threshold: Some(0.5),
        ..CamSettings::default()
    };
    let config = CamsConfig {
        data: DatasetConfig {
            images: ex.join("images"),
            annotations: None,
            labels: Some(ex.join("labels.txt")),
            split: None,
        },
        classes: ClassSet::voc(),
        model: model.to_str().unwrap().to_string(),
        settings: settings.clone(),
        out: d.join("cams"),
        shard: None,
        overwrite: false,
        report: None,
        threads: Some(1),
        exif: clip_es_image::ExifOrientation::Ignore,
    };
    let report = clip_es::cams::run(&config, &Silent).unwrap();
    assert_eq!((report.in_split, report.written.len()), (4, 4));
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    // One image in memory gives the file the stage wrote.
    let cams = Cams::load(model.to_str().unwrap(), ClassSet::voc(), &settings).unwrap();
    let image = DecodedImage::open(&ex.join("images/horse.jpg")).unwrap();
    let horse = ClassSet::voc().resolve("horse").unwrap();
    let (maps, _) = cams.image(&image, &[horse]).unwrap();
    let file = maps.to_cam_file(&[horse]);
    assert_eq!(file, CamFile::read(&d.join("cams/horse.npz")).unwrap());
    assert!(
        cams.image(&image, &[20]).is_err(),
        "label 20 is not a VOC class"
    );

    let masks = MasksConfig {
        threads: Some(1),
        ..MasksConfig::new(
            d.join("cams"),
            ex.join("images"),
            ex.join("labels.txt"),
            d.join("masks"),
        )
    };
    let r = clip_es::masks::run(&masks, &Silent).unwrap();
    assert_eq!((r.images, r.written, r.failures.len()), (4, 4, 0));
    let rgb = clip_es_image::load_rgb(&ex.join("images/horse.jpg")).unwrap();
    let mask = pseudo_mask(
        &file,
        &rgb,
        &MaskOptions::default(),
        &KernelCache::default(),
    )
    .unwrap();
    assert_eq!(
        mask.labels,
        read_label_png(&d.join("masks/horse.png")).unwrap().labels
    );

    let eval = EvalConfig::new(
        Prediction::Masks(d.join("masks")),
        ex.join("gt"),
        ex.join("labels.txt"),
        ClassSet::voc(),
    );
    let e = clip_es::eval::run(&eval, &Silent).unwrap();
    assert_eq!((e.images, e.evaluated()), (4, 4));
    assert!(e.scores().mean_iou.is_finite());
    std::fs::remove_dir_all(&d).unwrap();
}
