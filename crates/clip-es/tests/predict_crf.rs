//! `clip-es predict`'s label step against deeplab-pytorch's post-processing
//! (tools/golden_predict_crf.py: upsampled logits, softmax, pydensecrf with the pseudo masks'
//! kernels on the mean-subtracted BGR image cast to uint8, argmax): the label maps of
//! [`clip_es::predict::labels_from_scores`], with and without the CRF, must be identical on the
//! five miniature images of tests/data/crf.

use clip_es::masks::{CrfParams, KernelCache};
use clip_es::predict::labels_from_scores;
use clip_es_pickle::{DType, NdArray, NpyContent};
use clip_es_train::predict::ClassScores;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn array(path: &Path) -> NdArray {
    match clip_es_pickle::read_npy(path).unwrap() {
        NpyContent::Array(a) => a,
        other => panic!("{}: not a numeric array: {other:?}", path.display()),
    }
}

fn labels(path: &Path) -> Vec<u8> {
    let a = array(path);
    assert_eq!(a.dtype, DType::U8, "{}", path.display());
    a.data
}

#[test]
fn predict_labels_equal_deeplab_pytorch_with_and_without_crf() {
    let cache = KernelCache::default();
    let mut checked = 0;
    for i in 0..5 {
        let id = format!("mini_{i:03}");
        let image = clip_es_image::load_rgb(&data().join(format!("crf/images/{id}.png"))).unwrap();
        let s = array(&data().join(format!("predict_crf/{id}_scores.npy")));
        assert_eq!(s.dtype, DType::F16);
        let scores = ClassScores {
            classes: s.shape[0],
            height: s.shape[1],
            width: s.shape[2],
            data: s
                .data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        for (crf, golden) in [(None, "argmax"), (Some(CrfParams::default()), "crf")] {
            let want = labels(&data().join(format!("predict_crf/{id}_{golden}.npy")));
            let got = labels_from_scores(&scores, &image, crf.as_ref(), &cache).unwrap();
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{id} ({golden}, {} classes): {differ} of {} pixels differ",
                scores.classes,
                want.len()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn scores_of_another_size_are_refused() {
    let image = clip_es_image::load_rgb(&data().join("crf/images/mini_000.png")).unwrap();
    let scores = ClassScores {
        classes: 2,
        height: 3,
        width: 4,
        data: vec![0.0; 24],
    };
    let e = labels_from_scores(&scores, &image, None, &KernelCache::default()).unwrap_err();
    assert!(e.contains("4x3") && e.contains("64x48"), "{e}");
}
