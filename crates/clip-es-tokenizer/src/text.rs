//! Text cleaning and pre-tokenization of OpenAI's CLIP (clip/simple_tokenizer.py:
//! `basic_clean`, `whitespace_clean`, the `.lower()` in `encode`, and `self.pat`).

use crate::ftfy::fix_text;
use crate::html::html_unescape;
use crate::pystr::{py_lower, py_strip, run_class, whitespace_clean};
use crate::tables::SPLIT_CLASS_RUNS;

/// The text CLIP feeds its BPE: `whitespace_clean(basic_clean(text)).lower()`, i.e.
/// `ftfy.fix_text`, `html.unescape` twice, strip, collapse `\s+` to one space, strip, lower-case.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    py_lower(&whitespace_clean(py_strip(&unescaped)))
}

/// What the pre-tokenizer regex does with a char (see `SPLIT_CLASS_RUNS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SplitClass {
    /// Matched by no branch: whitespace, and U+0345 (IGNORECASE makes it neither letter nor other).
    Skip,
    Letter,
    Number,
    Other,
}

fn split_class(c: char) -> SplitClass {
    let class = if c.is_ascii() {
        match c {
            'a'..='z' | 'A'..='Z' => 1,
            '0'..='9' => 2,
            '\t'..='\r' | ' ' => 0,
            _ => 3,
        }
    } else {
        run_class(SPLIT_CLASS_RUNS, c)
    };
    match class {
        1 => SplitClass::Letter,
        2 => SplitClass::Number,
        3 => SplitClass::Other,
        _ => SplitClass::Skip,
    }
}

/// A char compared case-insensitively as the `regex` module does for the pattern's ASCII
/// literals (its case-insensitive matches of a-z include U+017F for `s`, U+0130 for `i` and
/// U+212A for `k`).
fn fold(c: char) -> char {
    match c {
        '\u{17f}' => 's',
        '\u{130}' => 'i',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// Byte length of the prefix of `text` matching the ASCII `literal` case-insensitively.
fn match_literal(text: &str, literal: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    for expected in literal.chars() {
        let (_, c) = chars.next()?;
        if fold(c) != expected {
            return None;
        }
    }
    Some(chars.next().map_or(text.len(), |(i, _)| i))
}

const SPECIAL_AND_CONTRACTIONS: [&str; 9] = [
    "<|startoftext|>",
    "<|endoftext|>",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
];

/// `regex.findall(pat, text)` with CLIP's pattern
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// (IGNORECASE), as slices of `text`.
pub(crate) fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        if let Some(len) = SPECIAL_AND_CONTRACTIONS
            .iter()
            .find_map(|lit| match_literal(rest, lit))
        {
            out.push(&rest[..len]);
            pos += len;
            continue;
        }
        let first = rest.chars().next().expect("non-empty");
        let class = split_class(first);
        let len = match class {
            SplitClass::Skip => {
                pos += first.len_utf8();
                continue;
            }
            SplitClass::Number => first.len_utf8(),
            SplitClass::Letter | SplitClass::Other => rest
                .char_indices()
                .find(|&(_, c)| split_class(c) != class)
                .map_or(rest.len(), |(i, _)| i),
        };
        out.push(&rest[..len]);
        pos += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_regex() {
        assert_eq!(
            pre_tokenize("a clean origami dog."),
            ["a", "clean", "origami", "dog", "."]
        );
        assert_eq!(
            pre_tokenize("don't 1984!'s"),
            ["don", "'t", "1", "9", "8", "4", "!'", "s"]
        );
        assert_eq!(
            pre_tokenize("<|startoftext|>hi<|endoftext|>"),
            ["<|startoftext|>", "hi", "<|endoftext|>"]
        );
        assert_eq!(
            pre_tokenize("'ſ <|ſtartoftext|>"),
            ["'ſ", "<|ſtartoftext|>"]
        );
        assert_eq!(
            pre_tokenize("a\u{345}b  日本語 ①"),
            ["a", "b", "日本語", "①"]
        );
        assert_eq!(pre_tokenize("e\u{301}"), ["e", "\u{301}"]);
    }

    #[test]
    fn class_table_edges() {
        assert_eq!(split_class('\u{10ffff}'), SplitClass::Other);
        assert_eq!(split_class('\u{3000}'), SplitClass::Skip);
        assert_eq!(split_class('é'), SplitClass::Letter);
        assert_eq!(split_class('٣'), SplitClass::Number);
    }
}
