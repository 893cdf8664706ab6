//! Vocabularies and merge ranks, from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (built as
//! `SimpleTokenizer.__init__` does, clip/simple_tokenizer.py) or from Hugging Face files
//! (`tokenizer.json`, or `vocab.json` + `merges.txt`) whose ids are taken as they are.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::read::GzDecoder;
use serde_json::Value;

use crate::error::TokenizerError;
use crate::pystr::is_py_space;

pub(crate) const SOT_TOKEN: &str = "<|startoftext|>";
pub(crate) const EOT_TOKEN: &str = "<|endoftext|>";
pub(crate) const END_OF_WORD: &str = "</w>";

/// Merges OpenAI's `SimpleTokenizer` reads: `lines[1 : 49152 - 256 - 2 + 1]` of its file.
const OPENAI_MERGE_LINES: usize = 49152 - 256 - 2;

/// The bytes in GPT-2/CLIP `bytes_to_unicode` order (printable ones first), and each byte's char.
pub(crate) fn bytes_to_unicode() -> ([u8; 256], [char; 256]) {
    let mut order = [0u8; 256];
    let mut chars = ['\0'; 256];
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    let mut k = 0;
    for b in 0..=255u8 {
        if printable(b) {
            order[k] = b;
            chars[b as usize] = b as char;
            k += 1;
        }
    }
    let mut n = 0;
    for b in 0..=255u8 {
        if !printable(b) {
            order[k] = b;
            chars[b as usize] = char::from_u32(256 + n).expect("valid char");
            k += 1;
            n += 1;
        }
    }
    (order, chars)
}

/// FxHash (as in rustc): the vocabulary's keys are trusted, and SipHash would double the time
/// to build the 49k-entry maps.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

fn fx_map<K, V>(capacity: usize) -> FxMap<K, V> {
    FxMap::with_capacity_and_hasher(capacity, Default::default())
}

/// A vocabulary with its merge ranks, in token ids.
pub(crate) struct Vocab {
    pub encoder: FxMap<String, u32>,
    /// id -> token, built on first use (only `decode` needs it).
    decoder: OnceLock<FxMap<u32, String>>,
    /// Id of each byte's symbol, and of that symbol followed by `</w>`.
    pub byte_ids: [u32; 256],
    pub byte_end_ids: [u32; 256],
    /// (left id, right id) -> (rank, id of the merged symbol).
    pub merges: FxMap<(u32, u32), (u32, u32)>,
    pub sot: u32,
    pub eot: u32,
}

fn format_err(path: &Path, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Format {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// A merge line's two symbols (Python `line.split()`), or `None` when it has another count.
fn split_merge(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split(is_py_space).filter(|p| !p.is_empty());
    let pair = (parts.next()?, parts.next()?);
    parts.next().is_none().then_some(pair)
}

impl Vocab {
    /// Fills the byte tables and sot/eot from a finished encoder; checks the 512 base symbols.
    fn finish(
        encoder: FxMap<String, u32>,
        merges: FxMap<(u32, u32), (u32, u32)>,
        sot: u32,
        eot: u32,
        path: &Path,
    ) -> Result<Self, TokenizerError> {
        let (_, chars) = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for b in 0..256 {
            let symbol = chars[b].to_string();
            let with_end = format!("{symbol}{END_OF_WORD}");
            byte_ids[b] = *encoder.get(&symbol).ok_or_else(|| {
                format_err(
                    path,
                    format!("byte symbol {symbol:?} is missing from the vocabulary"),
                )
            })?;
            byte_end_ids[b] = *encoder.get(&with_end).ok_or_else(|| {
                format_err(
                    path,
                    format!("byte symbol {with_end:?} is missing from the vocabulary"),
                )
            })?;
        }
        Ok(Vocab {
            encoder,
            decoder: OnceLock::new(),
            byte_ids,
            byte_end_ids,
            merges,
            sot,
            eot,
        })
    }

    /// id -> token string (for several strings with one id, any of them).
    pub fn decoder(&self) -> &FxMap<u32, String> {
        self.decoder
            .get_or_init(|| self.encoder.iter().map(|(k, &v)| (v, k.clone())).collect())
    }

    /// OpenAI's format: a `#version` line, then merges `a b`; the vocabulary is the 256 byte
    /// symbols, the same with `</w>`, each merge's concatenation in order, then the two special
    /// tokens, numbered in that order (a later duplicate string takes the later id, like Python's
    /// `dict`). Only the first 48,894 merge lines are read, as `SimpleTokenizer` does.
    /// `next_line` puts the next line (without its `\n`) in the buffer, or returns false at the end.
    fn from_openai_lines(
        mut next_line: impl FnMut(&mut String) -> std::io::Result<bool>,
        path: &Path,
    ) -> Result<Self, TokenizerError> {
        let (order, chars) = bytes_to_unicode();
        let mut tokens: Vec<String> = Vec::with_capacity(512 + OPENAI_MERGE_LINES + 2);
        tokens.extend(order.iter().map(|&b| chars[b as usize].to_string()));
        tokens.extend(
            order
                .iter()
                .map(|&b| format!("{}{END_OF_WORD}", chars[b as usize])),
        );
        // Per merge line: the byte length of its left symbol within its token, or None for an
        // empty line (Python turns it into the empty merge (), which still takes an id).
        let mut left_lens: Vec<Option<usize>> = Vec::with_capacity(OPENAI_MERGE_LINES);
        let io_err = |source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        };
        let mut line = String::new();
        if !next_line(&mut line).map_err(io_err)? {
            return Err(format_err(path, "empty merges file"));
        }
        while left_lens.len() < OPENAI_MERGE_LINES {
            line.clear();
            if !next_line(&mut line).map_err(io_err)? {
                break;
            }
            if line.split(is_py_space).all(str::is_empty) {
                tokens.push(String::new());
                left_lens.push(None);
                continue;
            }
            let (a, b) = split_merge(&line).ok_or_else(|| {
                format_err(
                    path,
                    format!(
                        "line {}: expected two symbols, found {line:?}",
                        left_lens.len() + 2
                    ),
                )
            })?;
            let mut token = String::with_capacity(a.len() + b.len());
            token.push_str(a);
            token.push_str(b);
            tokens.push(token);
            left_lens.push(Some(a.len()));
        }
        tokens.push(SOT_TOKEN.to_owned());
        tokens.push(EOT_TOKEN.to_owned());
        let mut encoder = fx_map(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            encoder.insert(token.clone(), id as u32);
        }
        let mut merges = fx_map(left_lens.len());
        for (rank, left_len) in left_lens.iter().enumerate() {
            let Some(left_len) = *left_len else { continue };
            let token = &tokens[512 + rank];
            let (a, b) = token.split_at(left_len);
            // A merge whose sides are not symbols can never fire in Python either.
            let (Some(&ia), Some(&ib)) = (encoder.get(a), encoder.get(b)) else {
                continue;
            };
            merges.insert((ia, ib), (rank as u32, encoder[token.as_str()]));
        }
        let sot = encoder[SOT_TOKEN];
        let eot = encoder[EOT_TOKEN];
        Self::finish(encoder, merges, sot, eot, path)
    }

    /// OpenAI's format from a whole file's bytes, gzip-compressed or not; split on `\n` like
    /// Python (so a final newline yields one more, empty, merge line).
    pub fn from_openai_bytes(bytes: &[u8], path: &Path) -> Result<Self, TokenizerError> {
        let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut inflated = Vec::new();
            GzDecoder::new(bytes)
                .read_to_end(&mut inflated)
                .map_err(|e| format_err(path, format!("corrupt gzip data: {e}")))?;
            inflated
        } else {
            bytes.to_vec()
        };
        let text = String::from_utf8(raw).map_err(|_| format_err(path, "not valid UTF-8"))?;
        let mut lines = text.split('\n');
        Self::from_openai_lines(
            |buf| Ok(lines.next().map(|l| buf.push_str(l)).is_some()),
            path,
        )
    }

    /// The bundled file, inflated only as far as the merges `SimpleTokenizer` reads.
    pub fn from_openai_gz_prefix(gz: &[u8], path: &Path) -> Result<Self, TokenizerError> {
        let mut reader = BufReader::with_capacity(1 << 16, GzDecoder::new(gz));
        Self::from_openai_lines(
            |buf| {
                if reader.read_line(buf)? == 0 {
                    return Ok(false);
                }
                if buf.ends_with('\n') {
                    buf.pop();
                }
                Ok(true)
            },
            path,
        )
    }

    /// Hugging Face ids: `vocab` as given, merge ranks in list order.
    fn from_hf_parts(
        encoder: FxMap<String, u32>,
        merge_list: Vec<(String, String, String)>,
        special: &HashMap<String, u32>,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let mut merges = fx_map(merge_list.len());
        for (rank, (a, b, line)) in merge_list.iter().enumerate() {
            let id = |s: &str| {
                encoder.get(s).copied().ok_or_else(|| {
                    format_err(
                        merges_path,
                        format!(
                            "merge {line}: {s:?} is not in the vocabulary ({})",
                            vocab_path.display()
                        ),
                    )
                })
            };
            let (ia, ib, merged) = (id(a)?, id(b)?, id(&format!("{a}{b}"))?);
            merges.insert((ia, ib), (rank as u32, merged));
        }
        let special_id = |token: &'static str| {
            encoder
                .get(token)
                .or_else(|| special.get(token))
                .copied()
                .ok_or_else(|| TokenizerError::MissingSpecialToken {
                    path: vocab_path.to_owned(),
                    token,
                })
        };
        let (sot, eot) = (special_id(SOT_TOKEN)?, special_id(EOT_TOKEN)?);
        let mut encoder = encoder;
        // Special tokens only listed among added tokens still need an encoder entry.
        encoder.entry(SOT_TOKEN.to_owned()).or_insert(sot);
        encoder.entry(EOT_TOKEN.to_owned()).or_insert(eot);
        Self::finish(encoder, merges, sot, eot, vocab_path)
    }

    /// A Hugging Face `tokenizer.json` with a BPE `model` (`vocab`, `merges` as `"a b"` strings or
    /// `["a", "b"]` pairs); the special tokens may also come from `added_tokens`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, TokenizerError> {
        let json = read_json(path)?;
        let model = json
            .get("model")
            .ok_or_else(|| format_err(path, "no \"model\" object"))?;
        if let Some(kind) = model.get("type").and_then(Value::as_str) {
            if kind != "BPE" {
                return Err(format_err(
                    path,
                    format!("model type is {kind:?}, not \"BPE\""),
                ));
            }
        }
        let vocab = model
            .get("vocab")
            .ok_or_else(|| format_err(path, "no \"model.vocab\""))?;
        let encoder = vocab_from_json(vocab, path, "model.vocab")?;
        let merges = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| format_err(path, "no \"model.merges\" list"))?;
        let mut merge_list = Vec::with_capacity(merges.len());
        for (i, merge) in merges.iter().enumerate() {
            let pair = match merge {
                Value::String(s) => split_merge(s).map(|(a, b)| (a.to_owned(), b.to_owned())),
                Value::Array(parts) => match parts.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            let (a, b) = pair.ok_or_else(|| {
                format_err(path, format!("model.merges[{i}] is not a merge: {merge}"))
            })?;
            merge_list.push((a, b, format!("model.merges[{i}]")));
        }
        let mut special = HashMap::new();
        if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
            for token in added {
                if let (Some(content), Some(id)) = (
                    token.get("content").and_then(Value::as_str),
                    token.get("id").and_then(Value::as_u64),
                ) {
                    special.insert(content.to_owned(), id as u32);
                }
            }
        }
        Self::from_hf_parts(encoder, merge_list, &special, path, path)
    }

    /// Hugging Face `vocab.json` + `merges.txt` (a first line starting with `#version` is skipped,
    /// as are blank lines).
    pub fn from_vocab_merges(
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let json = read_json(vocab_path)?;
        let encoder = vocab_from_json(&json, vocab_path, "the top level")?;
        let text = read_text(merges_path)?;
        let mut merge_list = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if (i == 0 && line.starts_with("#version"))
                || line.split(is_py_space).all(str::is_empty)
            {
                continue;
            }
            let (a, b) = split_merge(line).ok_or_else(|| {
                format_err(
                    merges_path,
                    format!("line {}: expected two symbols, found {line:?}", i + 1),
                )
            })?;
            merge_list.push((a.to_owned(), b.to_owned(), format!("on line {}", i + 1)));
        }
        Self::from_hf_parts(
            encoder,
            merge_list,
            &HashMap::new(),
            vocab_path,
            merges_path,
        )
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    String::from_utf8(read_bytes(path)?).map_err(|_| format_err(path, "not valid UTF-8"))
}

fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    serde_json::from_slice(&read_bytes(path)?).map_err(|source| TokenizerError::Json {
        path: path.to_owned(),
        source,
    })
}

fn vocab_from_json(
    value: &Value,
    path: &Path,
    what: &str,
) -> Result<FxMap<String, u32>, TokenizerError> {
    let object = value
        .as_object()
        .ok_or_else(|| format_err(path, format!("{what} is not a token -> id object")))?;
    object
        .iter()
        .map(|(token, id)| {
            let id = id
                .as_u64()
                .filter(|&id| id <= u32::MAX as u64)
                .ok_or_else(|| {
                    format_err(
                        path,
                        format!("{what}: id of {token:?} is not a token id: {id}"),
                    )
                })?;
            Ok((token.clone(), id as u32))
        })
        .collect()
}

/// Reads an OpenAI-format merges file (gzip-compressed or not).
pub(crate) fn read_openai_file(path: &Path) -> Result<Vocab, TokenizerError> {
    let bytes = read_bytes(path)?;
    Vocab::from_openai_bytes(&bytes, path)
}

/// The pseudo-path naming the bundled vocabulary in errors.
pub(crate) fn bundled_path() -> PathBuf {
    PathBuf::from("<bundled bpe_simple_vocab_16e6.txt.gz>")
}
