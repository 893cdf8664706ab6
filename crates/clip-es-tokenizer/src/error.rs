//! Errors of the CLIP tokenizer: loading a vocabulary (each names its file) and tokenizing.

use std::path::PathBuf;

/// Everything that can go wrong building or using a [`crate::ClipTokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A file parses but is not a usable CLIP vocabulary or merge list.
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
    /// The vocabulary lacks `<|startoftext|>` or `<|endoftext|>`.
    #[error("{}: special token {token} is missing from the vocabulary", path.display())]
    MissingSpecialToken { path: PathBuf, token: &'static str },
    /// A directory holds neither `tokenizer.json` nor `vocab.json` + `merges.txt`.
    #[error("{}: no tokenizer.json, nor vocab.json and merges.txt", dir.display())]
    NoTokenizerFiles { dir: PathBuf },
    /// A text needs more tokens (start and end included) than the context holds, and
    /// truncation was not asked for (OpenAI: "Input ... is too long for context length ...").
    #[error(
        "input {text:?} is too long for context length {context_length}: it needs {tokens} tokens"
    )]
    TooLong {
        text: String,
        tokens: usize,
        context_length: usize,
    },
    /// A context length of 0 leaves no room for the end-of-text token.
    #[error("context length must be at least 1")]
    ZeroContextLength,
}
