//! Outside CI: the parity fixture's random ViT-B/16 (written by
//! tools/parity/make_fixture.py) in its three layouts loads to identical tensors.
//! Run with `cargo test --release -p clip-es-model --test parity_fixture -- --ignored --nocapture`;
//! the fixture directory is `$CLIP_ES_PARITY_FIXTURE`, or `$CLIP_ES_PARITY_DIR/fixture`.

use std::path::PathBuf;
use std::time::Instant;

use clip_es_model::{ClipConfig, ClipWeights, WeightsFormat};

fn fixture_dir() -> PathBuf {
    std::env::var_os("CLIP_ES_PARITY_FIXTURE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CLIP_ES_PARITY_DIR").map(|d| PathBuf::from(d).join("fixture"))
        })
        .expect(
            "set CLIP_ES_PARITY_FIXTURE (or CLIP_ES_PARITY_DIR) to the parity fixture directory",
        )
}

fn timed_load(path: PathBuf) -> ClipWeights {
    // the first load of each file may include reading it from disk into the page cache
    let start = Instant::now();
    let w = ClipWeights::load(&path).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "loaded {} ({:?}, stored {:?}) in {:.2} s",
        path.display(),
        w.source().format,
        w.source().stored_dtype,
        start.elapsed().as_secs_f64()
    );
    w
}

#[test]
#[ignore = "needs the parity fixture ($CLIP_ES_PARITY_FIXTURE)"]
fn parity_fixture_layouts_are_identical() {
    let dir = fixture_dir();
    let hf = timed_load(dir.join("clip-vit-base-patch16-random"));
    assert_eq!(hf.config(), &ClipConfig::vit_b_16());
    let others = [
        timed_load(dir.join("ViT-B-16-random.pt")),
        timed_load(dir.join("ViT-B-16-random-jit.pt")),
    ];
    assert_eq!(others[0].source().format, WeightsFormat::OpenAiStateDict);
    assert_eq!(others[1].source().format, WeightsFormat::TorchScript);
    for other in &others {
        assert_eq!(other.config(), hf.config());
        for name in hf.names() {
            let a = hf.get(name).unwrap().values();
            let b = other.get(name).unwrap().values();
            assert!(
                a == b,
                "{name} differs between {} and {}",
                hf.source().path.display(),
                other.source().path.display()
            );
        }
    }
}
