//! Vocabulary sources (OpenAI format, Hugging Face tokenizer.json / vocab.json + merges.txt),
//! load errors, the context-length limit, truncation, and sharing across threads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clip_es_tokenizer::{ClipTokenizer, TokenizerError, CONTEXT_LENGTH};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("clip-es-tokenizer")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn custom_golden() -> Vec<(String, Vec<u32>, u32, u32)> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(data("custom_golden.json")).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let ids = r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let id = |k: &str| r[k].as_u64().unwrap() as u32;
            (
                r["text"].as_str().unwrap().to_owned(),
                ids,
                id("sot"),
                id("eot"),
            )
        })
        .collect()
}

fn check_custom(tok: &ClipTokenizer, source: &str) {
    let golden = custom_golden();
    assert!(golden.len() >= 10);
    assert_eq!(tok.vocab_size(), 512 + 300 + 2, "{source}");
    let mut merged = 0;
    for (text, ids, sot, eot) in &golden {
        assert_eq!((tok.sot_id(), tok.eot_id()), (*sot, *eot), "{source}");
        assert_eq!(&tok.encode(text), ids, "{source}: {text:?}");
        merged += ids.iter().filter(|&&id| id >= 512 && id < *sot).count();
        let batch = tok.tokenize(&[text], CONTEXT_LENGTH, false).unwrap();
        assert_eq!(batch.row(0)[0], *sot);
        assert_eq!(batch.row(0)[ids.len() + 1], *eot);
    }
    assert!(merged > 20, "the custom merges must be exercised");
}

#[test]
fn custom_vocab_in_openai_format() {
    check_custom(
        &ClipTokenizer::from_openai_bpe_file(data("custom_vocab/bpe.txt.gz")).unwrap(),
        "bpe.txt.gz",
    );
}

#[test]
fn custom_vocab_from_hf_files() {
    let dir = data("custom_vocab");
    check_custom(
        &ClipTokenizer::from_vocab_merges(dir.join("vocab.json"), dir.join("merges.txt")).unwrap(),
        "vocab.json",
    );
    check_custom(
        &ClipTokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap(),
        "tokenizer.json",
    );
    check_custom(
        &ClipTokenizer::from_tokenizer_json(dir.join("tokenizer_pairs.json")).unwrap(),
        "tokenizer_pairs.json",
    );
    check_custom(&ClipTokenizer::from_hf_dir(&dir).unwrap(), "hf dir");
}

#[test]
fn hf_dir_falls_back_to_vocab_and_merges() {
    let dir = scratch("fallback");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(data("custom_vocab").join(f), dir.join(f)).unwrap();
    }
    check_custom(
        &ClipTokenizer::from_hf_dir(&dir).unwrap(),
        "vocab.json + merges.txt dir",
    );
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    let err = ClipTokenizer::from_hf_dir(&dir).err().unwrap();
    assert!(matches!(err, TokenizerError::NoTokenizerFiles { .. }));
    assert!(err.to_string().contains(dir.to_str().unwrap()), "{err}");
}

#[test]
fn hf_special_tokens_may_come_from_added_tokens() {
    let dir = scratch("added_tokens");
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(data("custom_vocab/tokenizer.json")).unwrap())
            .unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let sot = vocab.remove("<|startoftext|>").unwrap();
    let eot = vocab.remove("<|endoftext|>").unwrap();
    json["added_tokens"] = serde_json::json!([{"id": sot, "content": "<|startoftext|>"}, {"id": eot, "content": "<|endoftext|>"}]);
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    check_custom(
        &ClipTokenizer::from_tokenizer_json(&path).unwrap(),
        "added_tokens",
    );
}

fn assert_err_names(result: Result<ClipTokenizer, TokenizerError>, path: &Path, needle: &str) {
    let err = result.err().expect("loading must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()),
        "{msg:?} does not name {}",
        path.display()
    );
    assert!(msg.contains(needle), "{msg:?} does not say {needle:?}");
}

#[test]
fn load_errors_name_the_file() {
    let dir = scratch("errors");
    let missing = dir.join("nope.json");
    assert_err_names(
        ClipTokenizer::from_tokenizer_json(&missing),
        &missing,
        "cannot read",
    );
    assert_err_names(
        ClipTokenizer::from_openai_bpe_file(&missing),
        &missing,
        "cannot read",
    );

    let corrupt = dir.join("corrupt.json");
    std::fs::write(&corrupt, b"{\"model\": {\"vocab\": ").unwrap();
    assert_err_names(
        ClipTokenizer::from_tokenizer_json(&corrupt),
        &corrupt,
        "invalid JSON",
    );

    let vocab_text = std::fs::read_to_string(data("custom_vocab/vocab.json")).unwrap();
    let mut vocab: serde_json::Map<String, Value> = serde_json::from_str(&vocab_text).unwrap();
    vocab.remove("<|endoftext|>");
    let no_eot = dir.join("vocab.json");
    std::fs::write(&no_eot, serde_json::to_vec(&vocab).unwrap()).unwrap();
    let merges = data("custom_vocab/merges.txt");
    assert_err_names(
        ClipTokenizer::from_vocab_merges(&no_eot, &merges),
        &no_eot,
        "<|endoftext|> is missing",
    );

    vocab.insert("<|endoftext|>".into(), Value::from(813));
    vocab.remove("a");
    std::fs::write(&no_eot, serde_json::to_vec(&vocab).unwrap()).unwrap();
    assert_err_names(
        ClipTokenizer::from_vocab_merges(&no_eot, &merges),
        &merges,
        "\"a\" is not in the vocabulary",
    );

    let bad_merges = dir.join("merges.txt");
    std::fs::write(&bad_merges, "#version: 0.2\ni n\nthree symbols here\n").unwrap();
    assert_err_names(
        ClipTokenizer::from_vocab_merges(data("custom_vocab/vocab.json"), &bad_merges),
        &bad_merges,
        "line 3",
    );

    let bad_gz = dir.join("bpe.txt.gz");
    let mut gz = std::fs::read(data("custom_vocab/bpe.txt.gz")).unwrap();
    gz.truncate(gz.len() / 2);
    std::fs::write(&bad_gz, &gz).unwrap();
    assert_err_names(
        ClipTokenizer::from_openai_bpe_file(&bad_gz),
        &bad_gz,
        "gzip",
    );

    let not_bpe = dir.join("not_bpe.json");
    std::fs::write(
        &not_bpe,
        br#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
    )
    .unwrap();
    assert_err_names(
        ClipTokenizer::from_tokenizer_json(&not_bpe),
        &not_bpe,
        "WordPiece",
    );
}

#[test]
fn openai_format_file_mirrors_python_line_split() {
    // SimpleTokenizer splits on "\n": a final newline is one more (empty) merge line, which still
    // takes an id, so the special tokens move up by one.
    let dir = scratch("newline");
    let plain = dir.join("bpe.txt");
    std::fs::write(&plain, "#version: test\ni n\nt h\n").unwrap();
    let tok = ClipTokenizer::from_openai_bpe_file(&plain).unwrap();
    assert_eq!((tok.sot_id(), tok.eot_id()), (515, 516));
    assert_eq!(tok.token_id("in"), Some(512));
    std::fs::write(&plain, "#version: test\ni n\nt h").unwrap();
    let tok = ClipTokenizer::from_openai_bpe_file(&plain).unwrap();
    assert_eq!((tok.sot_id(), tok.eot_id()), (514, 515));
    assert_eq!(
        tok.encode("thin"),
        vec![
            tok.token_id("th").unwrap(),
            tok.token_id("i").unwrap(),
            tok.token_id("n</w>").unwrap()
        ]
    );
}

#[test]
fn too_long_and_truncation() {
    let tok = ClipTokenizer::openai().unwrap();
    let text = format!("a clean origami {}dog.", "very ".repeat(80));
    let n = tok.encode(&text).len() + 2;
    assert_eq!(n, 3 + 80 + 2 + 2);
    let err = tok
        .tokenize(&["fine", text.as_str()], CONTEXT_LENGTH, false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("a clean origami very")
            && msg.contains(&format!("{n} tokens"))
            && msg.contains("77"),
        "{msg}"
    );

    let batch = tok
        .tokenize(&["fine", text.as_str()], CONTEXT_LENGTH, true)
        .unwrap();
    let full: Vec<u32> = std::iter::once(tok.sot_id())
        .chain(tok.encode(&text))
        .collect();
    assert_eq!(&batch.row(1)[..76], &full[..76]);
    assert_eq!(batch.row(1)[76], tok.eot_id());
    assert_eq!(batch.eot_positions(), vec![2, 76]);

    // A shorter context: same rule.
    let short = tok.tokenize(&["a clean origami dog."], 4, true).unwrap();
    assert_eq!(short.row(0), &[49406, 320, 3772, 49407]);
    assert!(tok.tokenize(&["a clean origami dog."], 4, false).is_err());
    assert_eq!(
        tok.tokenize(&["a clean origami dog."], 7, false)
            .unwrap()
            .row(0),
        &[49406, 320, 3772, 31832, 1929, 269, 49407]
    );
    assert!(matches!(
        tok.tokenize(&["x"], 0, true),
        Err(TokenizerError::ZeroContextLength)
    ));
    assert_eq!(
        tok.tokenize::<&str>(&[], CONTEXT_LENGTH, false)
            .unwrap()
            .rows(),
        0
    );
}

#[test]
fn shared_across_threads() {
    let tok = ClipTokenizer::openai().unwrap();
    let texts: Vec<String> = (0..200)
        .map(|i| format!("a clean origami object number {i}, variant {}", i % 7))
        .collect();
    let expected: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (t, e) in texts.iter().zip(&expected).rev() {
                    assert_eq!(&tok.encode(t), e);
                }
            });
        }
    });
}

#[test]
fn bundled_vocab_builds_quickly() {
    let start = Instant::now();
    let tok = ClipTokenizer::openai().unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "ClipTokenizer::openai() took {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(tok.vocab_size(), 49408);
    // Generous bound (debug builds, loaded CI machines); release builds take a few tens of ms.
    assert!(
        elapsed.as_secs_f64() < 5.0,
        "building the bundled vocabulary took {elapsed:?}"
    );
}
