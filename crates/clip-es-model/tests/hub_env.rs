//! `resolve_model` reads the cache location from the environment (HF_HUB_CACHE). Alone in its
//! test binary because it sets environment variables.

mod common;

use clip_es_model::{resolve_model, TokenizerFiles};
use common::{copy_dir, fixture, TempDir};

#[test]
fn hf_hub_cache_variable_is_honoured() {
    let tmp = TempDir::new("model-hub-env");
    let snapshot = tmp.join("cache/models--someone--tiny/snapshots/abc");
    copy_dir(&fixture("tiny-deep-hf"), &snapshot, &[]);
    std::fs::create_dir_all(tmp.join("cache/models--someone--tiny/refs")).unwrap();
    std::fs::write(tmp.join("cache/models--someone--tiny/refs/main"), "abc\n").unwrap();
    // SAFETY (edition 2024 wording): the only test of this binary, no other thread reads env
    std::env::set_var("HF_HUB_CACHE", tmp.join("cache"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let files = resolve_model("someone/tiny").unwrap();
    assert_eq!(files.weights, snapshot);
    assert!(matches!(
        files.tokenizer,
        TokenizerFiles::HuggingFace { .. }
    ));
    let e = resolve_model("someone/other").unwrap_err().to_string();
    assert!(
        e.contains(
            &tmp.join("cache/models--someone--other")
                .display()
                .to_string()
        ),
        "{e}"
    );
}
