//! Unicode NFC as CPython 3.11's `unicodedata.normalize("NFC", s)` computes it (the last step of
//! every ftfy pass, ftfy/__init__.py `fix_and_explain`): full canonical decomposition, canonical
//! ordering, canonical composition (UAX #15), with the Unicode 14 data of that Python, generated
//! into [`crate::tables`]. A crate with newer tables would reorder or compose characters that
//! Python 3.11 does not know.

use crate::pystr::run_class;
use crate::tables::{CANONICAL_DECOMPOSITIONS, CCC_RUNS, COMPOSITIONS};

const S_BASE: u32 = 0xac00;
const L_BASE: u32 = 0x1100;
const V_BASE: u32 = 0x1161;
const T_BASE: u32 = 0x11a7;
const L_COUNT: u32 = 19;
const V_COUNT: u32 = 21;
const T_COUNT: u32 = 28;
const N_COUNT: u32 = V_COUNT * T_COUNT;
const S_COUNT: u32 = L_COUNT * N_COUNT;

/// Everything below U+0300 is a starter that composes with nothing before another char
/// below U+0300, so such text is already NFC.
const FIRST_NON_TRIVIAL: u32 = 0x300;

fn ccc(c: char) -> u8 {
    if (c as u32) < FIRST_NON_TRIVIAL {
        0
    } else {
        run_class(CCC_RUNS, c)
    }
}

// `is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn decompose_into(c: char, out: &mut Vec<char>) {
    let cp = c as u32;
    if (S_BASE..S_BASE + S_COUNT).contains(&cp) {
        let s = cp - S_BASE;
        out.push(char::from_u32(L_BASE + s / N_COUNT).expect("Hangul jamo"));
        out.push(char::from_u32(V_BASE + (s % N_COUNT) / T_COUNT).expect("Hangul jamo"));
        if s % T_COUNT != 0 {
            out.push(char::from_u32(T_BASE + s % T_COUNT).expect("Hangul jamo"));
        }
        return;
    }
    if cp >= 0xc0 {
        if let Ok(i) = CANONICAL_DECOMPOSITIONS.binary_search_by_key(&cp, |&(k, _)| k) {
            out.extend(CANONICAL_DECOMPOSITIONS[i].1.chars());
            return;
        }
    }
    out.push(c);
}

#[allow(clippy::manual_is_multiple_of)]
fn compose_pair(first: char, second: char) -> Option<char> {
    let (a, b) = (first as u32, second as u32);
    if (L_BASE..L_BASE + L_COUNT).contains(&a) && (V_BASE..V_BASE + V_COUNT).contains(&b) {
        return char::from_u32(S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT);
    }
    if (S_BASE..S_BASE + S_COUNT).contains(&a)
        && (a - S_BASE) % T_COUNT == 0
        && (T_BASE + 1..T_BASE + T_COUNT).contains(&b)
    {
        return char::from_u32(a + (b - T_BASE));
    }
    COMPOSITIONS
        .binary_search_by_key(&(a, b), |&(x, y, _)| (x, y))
        .ok()
        .and_then(|i| char::from_u32(COMPOSITIONS[i].2))
}

/// `unicodedata.normalize("NFC", text)` of CPython 3.11.
pub(crate) fn nfc(text: &str) -> String {
    if text.chars().all(|c| (c as u32) < FIRST_NON_TRIVIAL) {
        return text.to_owned();
    }
    let mut chars = Vec::with_capacity(text.len());
    for c in text.chars() {
        decompose_into(c, &mut chars);
    }
    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    let mut i = 0;
    while i < chars.len() {
        if ccc(chars[i]) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ccc(chars[i]) != 0 {
            i += 1;
        }
        chars[start..i].sort_by_key(|&c| ccc(c));
    }
    // Canonical composition: a char joins the last starter unless a char between them is a
    // starter or has a combining class at least its own.
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut starter: Option<usize> = None;
    let mut last_class: i32 = -1;
    for c in chars {
        let class = ccc(c) as i32;
        if let Some(s) = starter {
            let unblocked = last_class < class || (last_class == 0 && out.len() == s + 1);
            if unblocked {
                if let Some(composite) = compose_pair(out[s], c) {
                    out[s] = composite;
                    continue;
                }
            }
        }
        if class == 0 {
            starter = Some(out.len());
        }
        last_class = class;
        out.push(c);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_and_orders_like_python() {
        assert_eq!(nfc("e\u{301}"), "é");
        assert_eq!(nfc("a\u{323}\u{302}"), "ậ");
        assert_eq!(nfc("a\u{302}\u{323}"), "ậ");
        assert_eq!(nfc("\u{1100}\u{1161}\u{11a8}"), "각");
        assert_eq!(nfc("각"), "각");
        assert_eq!(nfc("\u{915}\u{93c}"), "\u{915}\u{93c}"); // composition exclusion
        assert_eq!(nfc("\u{212b}"), "Å"); // singleton
        assert_eq!(nfc("<\u{338}"), "≮");
        assert_eq!(nfc("\u{b47}\u{b3e}"), "\u{b4b}"); // two starters
        assert_eq!(nfc("\u{1e0a}\u{323}"), "\u{1e0c}\u{307}");
        // U+05C9 is unassigned in Unicode 14: no reordering around it.
        assert_eq!(nfc("\u{1be}\u{301}\u{5c9}"), "\u{1be}\u{301}\u{5c9}");
    }
}
