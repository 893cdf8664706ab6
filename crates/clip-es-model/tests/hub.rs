//! Model resolution: the tiny model laid out as the Hugging Face cache holds it, OpenAI's clip
//! cache, local paths, and the errors when a model is nowhere to be found.

mod common;

use std::path::{Path, PathBuf};

use clip_es_model::{ClipWeights, HubError, ModelFiles, Resolver, TokenizerFiles};
use common::{copy_dir, fixture, TempDir};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays out tiny-openai-hf as `models--test--tiny-clip` in an HF cache under `root`, the way
/// huggingface_hub stores it (refs/main -> snapshots/<commit>/, files as links into blobs/).
fn hf_cache_with_tiny(root: &Path, skip: &[&str]) -> PathBuf {
    let cache = root.join("hub");
    let repo = cache.join("models--test--tiny-clip");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let blobs = repo.join("blobs");
    copy_dir(&fixture("tiny-openai-hf"), &blobs, skip);
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let target = Path::new("../../blobs").join(entry.file_name());
        link(&target, &snapshot.join(entry.file_name()));
    }
    cache
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

#[cfg(not(unix))]
fn link(target: &Path, at: &Path) {
    std::fs::copy(at.parent().unwrap().join(target), at).unwrap();
}

fn resolver(root: &Path, hf_cache: PathBuf, offline: bool) -> Resolver {
    Resolver {
        hf_cache,
        clip_cache: root.join("clip"),
        offline,
        // nothing listens on port 9 (discard): a download fails at once
        endpoint: "http://127.0.0.1:9".into(),
    }
}

#[test]
fn hub_id_found_in_the_cache() {
    let tmp = TempDir::new("model-hub-cache");
    let cache = hf_cache_with_tiny(tmp.path(), &[]);
    let r = resolver(tmp.path(), cache.clone(), true);
    let files = r.resolve("test/tiny-clip").unwrap();
    let snapshot = cache.join("models--test--tiny-clip/snapshots").join(COMMIT);
    assert_eq!(files.weights, snapshot);
    assert_eq!(
        files.tokenizer,
        TokenizerFiles::HuggingFace {
            dir: snapshot.clone(),
            tokenizer_json: Some(snapshot.join("tokenizer.json")),
            vocab_merges: Some((snapshot.join("vocab.json"), snapshot.join("merges.txt"))),
        }
    );
    let w = ClipWeights::load(&files.weights).unwrap();
    assert_eq!(w.config().text.vocab_size, 600);
    // a revision given as the commit itself
    assert_eq!(
        r.resolve(&format!("test/tiny-clip@{COMMIT}")).unwrap(),
        files
    );
}

#[test]
fn cache_entry_without_tokenizer_is_not_used() {
    let tmp = TempDir::new("model-hub-notok");
    let cache = hf_cache_with_tiny(tmp.path(), &["tokenizer.json", "vocab.json"]);
    let r = resolver(tmp.path(), cache.clone(), true);
    let e = r.resolve("test/tiny-clip").unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&cache.join("models--test--tiny-clip").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("--model"), "{msg}");
}

#[test]
fn missing_model_offline_and_online() {
    let tmp = TempDir::new("model-hub-missing");
    let cache = tmp.join("empty-cache");
    let offline = resolver(tmp.path(), cache.clone(), true);
    let msg = offline
        .resolve("openai/clip-vit-base-patch16")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("models--openai--clip-vit-base-patch16") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    assert!(msg.contains("--model PATH"), "{msg}");

    // downloads fail (nothing listens at the endpoint): the error says where it would have put
    // the files and how to pass a local path
    let online = resolver(tmp.path(), cache.clone(), false);
    let e = online.resolve("openai/clip-vit-base-patch16").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HubError::Download { .. }), "{msg}");
    assert!(
        msg.contains(&cache.display().to_string()) && msg.contains("--model PATH"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    eprintln!("download error: {msg}");
}

#[test]
fn openai_names_use_the_clip_cache() {
    let tmp = TempDir::new("model-hub-openai");
    let r = resolver(tmp.path(), tmp.join("hub"), true);
    let msg = r.resolve("ViT-B/16").unwrap_err().to_string();
    assert!(
        msg.contains(&tmp.join("clip/ViT-B-16.pt").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("--model PATH"), "{msg}");

    std::fs::create_dir_all(tmp.join("clip")).unwrap();
    std::fs::copy(fixture("tiny-openai-jit.pt"), tmp.join("clip/ViT-B-16.pt")).unwrap();
    assert_eq!(
        r.resolve("ViT-B/16").unwrap(),
        ModelFiles {
            weights: tmp.join("clip/ViT-B-16.pt"),
            tokenizer: TokenizerFiles::BundledOpenAi
        }
    );
}

#[test]
fn local_paths() {
    let tmp = TempDir::new("model-hub-local");
    let r = resolver(tmp.path(), tmp.join("hub"), true);
    let dir = fixture("tiny-openai-hf");
    let files = r.resolve(dir.to_str().unwrap()).unwrap();
    assert_eq!(files.weights, dir);
    assert!(matches!(
        files.tokenizer,
        TokenizerFiles::HuggingFace { .. }
    ));

    let pt = fixture("tiny-openai.pt");
    let files = r.resolve(pt.to_str().unwrap()).unwrap();
    assert_eq!(
        files,
        ModelFiles {
            weights: pt,
            tokenizer: TokenizerFiles::BundledOpenAi
        }
    );

    // a safetensors file in an HF directory takes that directory's tokenizer
    let st = dir.join("model.safetensors");
    let files = r.resolve(st.to_str().unwrap()).unwrap();
    assert!(matches!(
        files.tokenizer,
        TokenizerFiles::HuggingFace { .. }
    ));

    // an HF directory without a tokenizer is an error naming it
    let bare = tmp.join("bare-model");
    copy_dir(&dir, &bare, &["tokenizer.json", "vocab.json", "merges.txt"]);
    let e = r.resolve(bare.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("bare-model") && e.contains("tokenizer"), "{e}");
    // vocab.json + merges.txt alone are enough
    let pair = tmp.join("pair-model");
    copy_dir(&dir, &pair, &["tokenizer.json"]);
    match r.resolve(pair.to_str().unwrap()).unwrap().tokenizer {
        TokenizerFiles::HuggingFace {
            tokenizer_json: None,
            vocab_merges: Some(_),
            ..
        } => {}
        other => panic!("{other:?}"),
    }

    let e = r.resolve("no such thing").unwrap_err().to_string();
    assert!(e.contains("no such thing") && e.contains("neither"), "{e}");
}
