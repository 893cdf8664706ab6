//! Timing of the bundled vocabulary's construction and of tokenizing the CLIP-ES prompts:
//! `cargo run --release -p clip-es-tokenizer --example tokenizer_timing`.

use std::time::Instant;

use clip_es_tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

fn main() {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let tok = ClipTokenizer::openai().expect("bundled vocabulary");
        best = best.min(start.elapsed().as_secs_f64());
        drop(tok);
    }
    println!("ClipTokenizer::openai(): best of 5 {:.1} ms", best * 1e3);

    let tok = ClipTokenizer::openai().expect("bundled vocabulary");
    let names = [
        "aeroplane",
        "bicycle",
        "bird avian",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair seat",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person with clothes,people,human",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor screen",
        "ground",
        "land",
        "grass",
        "tree",
        "building",
        "wall",
        "sky",
    ];
    let prompts: Vec<String> = names
        .iter()
        .map(|n| format!("a clean origami {n}."))
        .collect();
    let start = Instant::now();
    let batch = tok
        .tokenize(&prompts, CONTEXT_LENGTH, false)
        .expect("prompts fit");
    let cold = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..100 {
        tok.tokenize(&prompts, CONTEXT_LENGTH, false)
            .expect("prompts fit");
    }
    let warm = start.elapsed().as_secs_f64() / 100.0;
    println!(
        "tokenize {} prompts: first call {:.2} ms, cached {:.3} ms",
        batch.rows(),
        cold * 1e3,
        warm * 1e3
    );

    // The first non-ASCII text builds ftfy's regular expressions.
    let start = Instant::now();
    let ids = tok.encode("un caf\u{c3}\u{a9} \u{e0} Paris");
    println!(
        "first mojibake text: {:.2} ms ({} ids)",
        start.elapsed().as_secs_f64() * 1e3,
        ids.len()
    );
    let start = Instant::now();
    for _ in 0..100 {
        tok.encode("un caf\u{c3}\u{a9} \u{e0} Paris");
    }
    println!(
        "later mojibake texts: {:.3} ms each",
        start.elapsed().as_secs_f64() * 1e3 / 100.0
    );
}
