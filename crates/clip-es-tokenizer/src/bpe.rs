//! Byte-level BPE of OpenAI's CLIP (`SimpleTokenizer.bpe` and `encode`, clip/simple_tokenizer.py):
//! the bytes of a pre-token become symbols (the last one carrying `</w>`), then the adjacent pair
//! of lowest merge rank is merged everywhere, left to right, until no ranked pair remains.
//! Results are cached per pre-token behind a lock, so the tokenizer can be shared by threads.

use std::sync::RwLock;

use crate::vocab::{FxMap, Vocab, EOT_TOKEN, SOT_TOKEN};

/// Past this many cached pre-tokens the cache starts over (keeps memory bounded).
const CACHE_LIMIT: usize = 1 << 16;

pub(crate) struct Bpe {
    pub vocab: Vocab,
    cache: RwLock<FxMap<String, Vec<u32>>>,
}

impl Bpe {
    pub fn new(vocab: Vocab) -> Self {
        Bpe {
            vocab,
            cache: RwLock::new(FxMap::default()),
        }
    }

    /// Appends the ids of one pre-token.
    pub fn encode_word(&self, token: &str, out: &mut Vec<u32>) {
        // SimpleTokenizer pre-seeds its cache with the two special tokens: never split.
        if token == SOT_TOKEN || token == EOT_TOKEN {
            out.push(self.vocab.encoder[token]);
            return;
        }
        if let Some(ids) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge_word(token);
        out.extend_from_slice(&ids);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(token.to_owned(), ids);
    }

    fn merge_word(&self, token: &str) -> Vec<u32> {
        let bytes = token.as_bytes();
        let Some((&last, init)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<u32> = init
            .iter()
            .map(|&b| self.vocab.byte_ids[b as usize])
            .collect();
        word.push(self.vocab.byte_end_ids[last as usize]);
        let mut next = Vec::with_capacity(word.len());
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.vocab
                        .merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, merged)| (rank, w[0], w[1], merged))
                })
                .min_by_key(|&(rank, ..)| rank);
            let Some((_, first, second, merged)) = best else {
                break;
            };
            next.clear();
            let mut i = 0;
            while i < word.len() {
                if word[i] == first && i + 1 < word.len() && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            std::mem::swap(&mut word, &mut next);
        }
        word
    }
}
