//! Python string semantics the CLIP text cleaning relies on (reference: `basic_clean`,
//! `whitespace_clean` and `SimpleTokenizer.encode` in clip/simple_tokenizer.py): `str.strip()`,
//! `regex.sub(r'\s+', ' ', t)` with the `regex` module's `\s`, and `str.lower()` as in CPython 3.11
//! (Unicode 14 case mappings, `Final_Sigma` context for U+03A3).
//!
//! The character sets, case mappings and final-sigma contexts come from the generated
//! [`crate::tables`], so they are those of the Python the golden files were made with, not those
//! of Rust's own (newer) Unicode tables.

use crate::tables::{PY_DECIMAL_RUNS, PY_ISSPACE, PY_LOWER, REGEX_WHITESPACE, SIGMA_CONTEXT_RUNS};

/// Python `str.isspace()`: also the `\s` of the `re` module for `str` patterns.
pub(crate) fn is_py_space(c: char) -> bool {
    match c {
        '\t'..='\r' | ' ' => true,
        _ if (c as u32) < 0x1c => false,
        _ => PY_ISSPACE.binary_search(&(c as u32)).is_ok(),
    }
}

/// `\s` of the `regex` module for `str` patterns (no U+001C..U+001F, unlike `str.isspace`).
pub(crate) fn is_regex_space(c: char) -> bool {
    match c {
        '\t'..='\r' | ' ' => true,
        _ if (c as u32) < 0x80 => false,
        _ => REGEX_WHITESPACE.binary_search(&(c as u32)).is_ok(),
    }
}

/// Python `text.strip()` (no argument).
pub(crate) fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

/// `regex.sub(r'\s+', ' ', text).strip()`: CLIP's `whitespace_clean`.
pub(crate) fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if is_regex_space(c) {
            if !in_space {
                out.push(' ');
                in_space = true;
            }
        } else {
            out.push(c);
            in_space = false;
        }
    }
    py_strip(&out).to_owned()
}

/// Python 3.11 `str.lower()`.
pub(crate) fn py_lower(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == '\u{3a3}' {
            out.push(if is_final_sigma(&chars, i) {
                '\u{3c2}'
            } else {
                '\u{3c3}'
            });
        } else {
            match PY_LOWER.binary_search_by_key(&(c as u32), |&(cp, _)| cp) {
                Ok(k) => out.push_str(PY_LOWER[k].1),
                Err(_) => out.push(c),
            }
        }
    }
    out
}

/// Class of `c` in a generated run table (see [`crate::tables`]).
pub(crate) fn run_class(runs: &[(u32, u8)], c: char) -> u8 {
    let cp = c as u32;
    runs[runs.partition_point(|&(start, _)| start <= cp) - 1].1
}

/// Python `re`'s `\d` for `str` patterns (general category Nd).
pub(crate) fn is_py_decimal(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        run_class(PY_DECIMAL_RUNS, c) == 1
    }
}

/// CPython's `handle_capital_sigma`: U+03A3 lower-cases to final sigma when preceded by a cased
/// letter and not followed by one, skipping case-ignorable characters on both sides.
fn is_final_sigma(chars: &[char], i: usize) -> bool {
    const CASE_IGNORABLE: u8 = 1;
    const CASED: u8 = 2;
    let class = |c: char| run_class(SIGMA_CONTEXT_RUNS, c);
    let before = chars[..i]
        .iter()
        .map(|&c| class(c))
        .rev()
        .find(|&k| k != CASE_IGNORABLE);
    if before != Some(CASED) {
        return false;
    }
    let after = chars[i + 1..]
        .iter()
        .map(|&c| class(c))
        .find(|&k| k != CASE_IGNORABLE);
    after != Some(CASED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_and_collapse_follow_python_sets() {
        // U+001C is str.isspace() but not the regex module's \s: kept inside, stripped at the ends.
        assert_eq!(whitespace_clean(" a\u{1c}b \t\n c\u{3000}"), "a\u{1c}b c");
        assert_eq!(whitespace_clean("\u{1c}a\u{1c}"), "a");
        assert_eq!(py_strip("\u{85}x\u{a0}"), "x");
        assert_eq!(whitespace_clean("a\u{200b}b"), "a\u{200b}b");
    }

    #[test]
    fn lower_matches_python_special_cases() {
        assert_eq!(py_lower("İstanbul"), "i\u{307}stanbul");
        assert_eq!(py_lower("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(py_lower("Σ"), "σ");
        assert_eq!(py_lower("ΑΣ."), "ας.");
        assert_eq!(py_lower("ΑΣ'Α"), "ασ'α");
        assert_eq!(py_lower("ǅ ǈ Ω K Å"), "ǆ ǉ ω k å");
        assert_eq!(py_lower("ABC"), "abc");
        // U+1E03E is unassigned in Python 3.11's Unicode 14 (not case-ignorable): final sigma.
        assert_eq!(py_lower("QΣ\u{1e03e}T"), "qς\u{1e03e}t");
        assert_eq!(py_lower("QΣ\u{301}T"), "qσ\u{301}t");
    }

    #[test]
    fn lower_table_agrees_with_rust_on_common_scripts() {
        // Rust's tables are newer than Python 3.11's; on long-assigned blocks they must agree,
        // which guards the generated table against corruption.
        for cp in (0x41..0x250)
            .chain(0x370..0x530)
            .chain(0x1e00..0x2000)
            .chain(0xff21..0xff3b)
        {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if c == '\u{3a3}' {
                continue;
            }
            assert_eq!(
                py_lower(&c.to_string()),
                c.to_lowercase().collect::<String>(),
                "U+{cp:04X}"
            );
        }
    }
}
