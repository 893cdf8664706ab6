//! Compares `ftfy::fix_text`, `clean_text` and `encode` with the cases written by
//! tools/stress_tokenizer.py (Python's ftfy 6.3.1 and OpenAI's SimpleTokenizer):
//! `cargo run --release -p clip-es-tokenizer --example compare_with_python -- cases.json`.

use clip_es_tokenizer::{clean_text, ftfy, ClipTokenizer};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: compare_with_python CASES.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let cases: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cases = cases.as_array().expect("a list of cases");
    let tok = ClipTokenizer::openai().expect("bundled vocabulary");
    let (mut fix_diffs, mut clean_diffs, mut id_diffs) = (0, 0, 0);
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let fixed = ftfy::fix_text(text);
        if fixed != case["fixed"].as_str().expect("fixed") {
            fix_diffs += 1;
            println!(
                "fix_text {text:?}\n  ours   {fixed:?}\n  Python {}",
                case["fixed"]
            );
        }
        let clean = clean_text(text);
        if clean != case["clean"].as_str().expect("clean") {
            clean_diffs += 1;
            println!(
                "clean {text:?}\n  ours   {clean:?}\n  Python {}",
                case["clean"]
            );
        }
        let ids: Vec<u64> = tok.encode(text).into_iter().map(u64::from).collect();
        let expected: Vec<u64> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id"))
            .collect();
        if ids != expected {
            id_diffs += 1;
            println!("ids {text:?}\n  ours   {ids:?}\n  Python {expected:?}");
        }
    }
    println!("{} cases: fix_text differs on {fix_diffs}, cleaned text on {clean_diffs}, ids on {id_diffs}", cases.len());
    if fix_diffs + clean_diffs + id_diffs > 0 {
        std::process::exit(1);
    }
}
