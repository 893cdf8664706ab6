//! ftfy 6.3 `fix_encoding`: detect UTF-8 text that was decoded with a single-byte codec
//! ("mojibake", e.g. `cafÃ©`) and decode it again (ftfy/__init__.py `_fix_encoding_one_step_and_explain`,
//! ftfy/badness.py, ftfy/chardata.py, ftfy/fixes.py, ftfy/bad_codecs).
//!
//! The pieces, as in ftfy:
//! - [`is_bad`]: ftfy's badness heuristic, a regular expression over character categories;
//! - the ten single-byte codecs ftfy tries, in its order (latin-1, "sloppy" windows-1252, -1251,
//!   -1250, -1253, -1254, -1257, iso-8859-2, macroman, cp437), with ftfy's convention that byte 0x1A
//!   stands for U+FFFD in the sloppy ones;
//! - `restore_byte_a0` (a space that was a no-break space byte) and `replace_lossy_sequences`
//!   (sequences partly lost to U+FFFD) on the re-encoded bytes;
//! - UTF-8 decoding, or ftfy's "utf-8-variants" (CESU-8 surrogate pairs, Java's `C0 80` null)
//!   when the bytes contain 0xED or 0xC0;
//! - `decode_inconsistent_utf8` for mojibake embedded in otherwise sound text;
//! - the Latin-1 -> Windows-1252 fallback and `fix_c1_controls`.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::bytes::Regex as BytesRegex;
use regex::Regex;

use crate::tables::*;

/// One of ftfy's single-byte codecs.
struct Charmap {
    sloppy: bool,
    /// Chars of bytes 0x80..=0xFF.
    high: [char; 128],
    encode: HashMap<char, u8>,
}

impl Charmap {
    /// Encodes `text`, or `None` when a char has no byte (ftfy's `possible_encoding` is false).
    fn encode(&self, text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            let b = match c {
                '\u{1a}' if self.sloppy => return None,
                '\u{fffd}' if self.sloppy => 0x1a,
                c if (c as u32) < 0x80 => c as u8,
                c => *self.encode.get(&c)?,
            };
            out.push(b);
        }
        Some(out)
    }

    fn decode_byte(&self, b: u8) -> char {
        if b >= 0x80 {
            self.high[(b - 0x80) as usize]
        } else {
            b as char
        }
    }
}

struct Charmaps {
    /// In ftfy's order (chardata.CHARMAP_ENCODINGS).
    all: Vec<(&'static str, Charmap)>,
}

fn charmaps() -> &'static Charmaps {
    static MAPS: OnceLock<Charmaps> = OnceLock::new();
    MAPS.get_or_init(|| Charmaps {
        all: CHARMAPS
            .iter()
            .map(|(name, sloppy, high)| {
                let encode = high
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (c, 0x80 + i as u8))
                    .collect();
                (
                    *name,
                    Charmap {
                        sloppy: *sloppy,
                        high: *high,
                        encode,
                    },
                )
            })
            .collect(),
    })
}

fn charmap(name: &str) -> &'static Charmap {
    &charmaps()
        .all
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known charmap")
        .1
}

/// A regex character class matching exactly the chars of `sets` (each char written as `\x{..}`).
fn class(sets: &[&str]) -> String {
    class_with(sets, "")
}

/// Like [`class`], with `extra` regex class syntax (e.g. `a-z`) appended inside the brackets.
fn class_with(sets: &[&str], extra: &str) -> String {
    let mut s = String::from("[");
    for set in sets {
        for c in set.chars() {
            s.push_str(&format!("\\x{{{:x}}}", c as u32));
        }
    }
    s.push_str(extra);
    s.push(']');
    s
}

/// Python's `\s` for `str` patterns (`str.isspace()`), as a class.
fn py_space_class() -> String {
    let mut s = String::from("[");
    for &cp in PY_ISSPACE {
        s.push_str(&format!("\\x{{{cp:x}}}"));
    }
    s.push(']');
    s
}

/// Python's `\w` for `str` patterns (`str.isalnum()` or `_`), as a class.
fn py_word_class() -> String {
    let mut s = String::from("[");
    for (k, &(start, class)) in PY_WORD_RUNS.iter().enumerate() {
        if class == 1 {
            let end = PY_WORD_RUNS
                .get(k + 1)
                .map_or(0x10ffff, |&(next, _)| next - 1);
            s.push_str(&format!("\\x{{{start:x}}}-\\x{{{end:x}}}"));
        }
    }
    s.push(']');
    s
}

/// ftfy's `BADNESS_RE` (badness.py), rule by rule, in ftfy's order.
fn badness_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let c1 = MOJIBAKE_C1;
        let bad = MOJIBAKE_BAD;
        let lower_acc = MOJIBAKE_LOWER_ACCENTED;
        let upper_acc = MOJIBAKE_UPPER_ACCENTED;
        let box_ = MOJIBAKE_BOX;
        let start = MOJIBAKE_START_PUNCTUATION;
        let end = MOJIBAKE_END_PUNCTUATION;
        let currency = MOJIBAKE_CURRENCY;
        let numeric = MOJIBAKE_NUMERIC;
        let law = MOJIBAKE_LAW;
        let lower_common = MOJIBAKE_LOWER_COMMON;
        let upper_common = MOJIBAKE_UPPER_COMMON;
        let kaomoji = MOJIBAKE_KAOMOJI;
        let common = MOJIBAKE_COMMON;
        let ws = py_space_class();
        let word = py_word_class();
        let arabic = class(&[common, currency, bad, numeric, start, "\u{178}\u{160}\u{ae}\u{b0}\u{b5}\u{bb}"]);
        let rules: Vec<String> = vec![
            class(&[c1]),
            format!("{}{}", class(&[bad, lower_acc, upper_acc, box_, start, end, currency, numeric, law]), class(&[bad])),
            format!("[a-zA-Z]{}{}", class(&[lower_common, upper_common]), class(&[bad])),
            format!("{}{}", class(&[bad]), class(&[lower_acc, upper_acc, box_, start, end, currency, numeric, law])),
            format!("{}{}", class(&[lower_acc, lower_common, box_, end, currency, numeric]), class(&[upper_acc])),
            format!("{}{}", class(&[box_, end, currency, numeric]), class(&[lower_acc])),
            format!("{}{}", class(&[lower_acc, box_, end]), class(&[currency])),
            format!("{ws}{}{}", class(&[upper_acc]), class(&[currency])),
            format!("{}{}", class(&[upper_acc, box_]), class(&[numeric, law])),
            format!("{}{}{}", class(&[lower_acc, upper_acc, box_, currency, end]), class(&[start]), class(&[numeric])),
            format!("{}{}{}", class(&[lower_acc, upper_acc, currency, numeric, box_, law]), class(&[end]), class(&[start])),
            format!("{}{}", class(&[currency, numeric, box_]), class(&[start])),
            format!("[a-z]{}{}", class(&[upper_acc]), class(&[start, currency])),
            format!("{}{}", class(&[box_]), class(&[kaomoji])),
            format!("{}{}", class(&[lower_acc, upper_acc, currency, numeric, start, end, law]), class(&[box_])),
            format!("{}{}", class(&[box_]), class(&[end])),
            format!("{}{}{word}", class(&[lower_acc, upper_acc]), class(&[start, end])),
            // The ligature œ when not followed by an unaccented Latin letter.
            "[\u{152}\u{153}][^A-Za-z]".to_owned(),
            // Degree signs after capital letters.
            format!("{}\u{b0}", class(&[upper_acc])),
            // Common Windows-1252 2-character mojibake.
            format!(
                "[\u{c2}\u{c3}\u{ce}\u{d0}]{}",
                class(&["\u{20ac}\u{153}\u{160}\u{161}\u{a2}\u{a3}\u{178}\u{17e}\u{a0}\u{ad}\u{ae}\u{a9}\u{b0}\u{b7}\u{bb}", start, end, "\u{2013}\u{2014}\u{b4}"])
            ),
            "\u{d7}[\u{b2}\u{b3}]".to_owned(),
            // Windows-1252 mojibake of Arabic words: four characters.
            format!("[\u{d8}\u{d9}]{arabic}[\u{d8}\u{d9}]{arabic}"),
            // Windows-1252 mojibake starting 3-character South Asian sequences.
            "\u{e0}[\u{b2}\u{b5}\u{b9}\u{bc}\u{bd}\u{be}]".to_owned(),
            // MacRoman mojibake.
            "\u{221a}[\u{b1}\u{2202}\u{2020}\u{2260}\u{ae}\u{2122}\u{b4}\u{2264}\u{2265}\u{a5}\u{b5}\u{f8}]".to_owned(),
            "\u{2248}[\u{b0}\u{a2}]".to_owned(),
            "\u{201a}\u{c4}[\u{ec}\u{ee}\u{ef}\u{f2}\u{f4}\u{fa}\u{f9}\u{fb}\u{2020}\u{b0}\u{a2}\u{3c0}]".to_owned(),
            "\u{201a}[\u{e2}\u{f3}][\u{e0}\u{e4}\u{b0}\u{ea}]".to_owned(),
            // Windows-1251 mojibake of the U+2000 range.
            "\u{432}\u{402}".to_owned(),
            // Windows-1251 mojibake of Latin-1 / Cyrillic: three characters.
            format!(
                "[\u{412}\u{413}\u{420}\u{421}]{}[\u{412}\u{413}\u{420}\u{421}]",
                class(&[c1, bad, start, end, currency, "\u{b0}\u{b5}"])
            ),
            "\u{413}\u{45e}\u{412}\u{402}\u{412}.[A-Za-z ]".to_owned(),
            // Windows-1252 encodings of à and á, and of U+A0 itself.
            "\u{c3}[\u{a0}\u{a1}]".to_owned(),
            format!("[a-z]{ws}?[\u{c3}\u{c2}][ ]"),
            r"\A[\x{c3}\x{c2}][ ]".to_owned(),
            // Â before a character it encodes as the same character.
            format!("{}\u{c2}{}", class_with(&[end], "a-z.,?!"), class(&[" ", start, end])),
            // Windows-1253 mojibake of the U+2000 range.
            "\u{3b2}\u{20ac}[\u{2122}\u{a0}\u{386}\u{ad}\u{ae}\u{b0}]".to_owned(),
            // Windows-1253 mojibake of Latin-1 / Greek.
            format!(
                "[\u{392}\u{393}\u{39e}\u{39f}]{}[\u{392}\u{393}\u{39e}\u{39f}]",
                class(&[c1, bad, start, end, currency, "\u{b0}"])
            ),
            // Windows-1257 mojibake of the U+2000 range.
            "\u{101}\u{20ac}".to_owned(),
        ];
        Regex::new(&rules.join("|")).expect("valid badness regex")
    })
}

/// `ftfy.badness.is_bad`: whether the text contains a sequence that is very likely mojibake.
pub fn is_bad(text: &str) -> bool {
    badness_regex().is_match(text)
}

/// ftfy's `ALTERED_UTF8_RE`: UTF-8 sequences that would be valid with byte 0x20 back to 0xA0.
fn altered_utf8_regex() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(
            r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]",
        )
        .expect("valid regex")
    })
}

/// ftfy's `LOSSY_UTF8_RE`: UTF-8 sequences with bytes lost to 0x1A (U+FFFD) or `?`.
fn lossy_utf8_regex() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(concat!(
            r"(?-u)[\xc2-\xdf][\x1a]",
            r"|[\xc2-\xc3][\x3f]",
            r"|\xed[\xa0-\xaf][\x1a\x3f]\xed[\xb0-\xbf][\x1a\x3f\x80-\xbf]",
            r"|\xed[\xa0-\xaf][\x1a\x3f\x80-\xbf]\xed[\xb0-\xbf][\x1a\x3f]",
            r"|[\xe0-\xef][\x1a\x3f][\x1a\x80-\xbf]",
            r"|[\xe0-\xef][\x1a\x80-\xbf][\x1a\x3f]",
            r"|[\xf0-\xf4][\x1a\x3f][\x1a\x80-\xbf][\x1a\x80-\xbf]",
            r"|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x3f][\x1a\x80-\xbf]",
            r"|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a\x3f]",
            r"|\x1a",
        ))
        .expect("valid regex")
    })
}

/// ftfy `fixes.restore_byte_a0`.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // A_GRAVE_WORD_RE: b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 " (keeps "à la" a word).
    let mut grave = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xc3 && bytes.get(i + 1) == Some(&b' ') {
            let ahead = &bytes[i + 2..];
            let excluded = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| ahead.starts_with(p));
            if !excluded {
                grave.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        grave.push(bytes[i]);
        i += 1;
    }
    altered_utf8_regex()
        .replace_all(&grave, |caps: &regex::bytes::Captures| {
            caps[0]
                .iter()
                .map(|&b| if b == b' ' { 0xa0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// ftfy `fixes.replace_lossy_sequences`.
fn replace_lossy_sequences(bytes: &[u8]) -> Vec<u8> {
    lossy_utf8_regex()
        .replace_all(bytes, &b"\xef\xbf\xbd"[..])
        .into_owned()
}

/// ftfy's "utf-8-variants" codec: UTF-8, plus CESU-8 surrogate pairs and Java's `C0 80` for U+0000.
fn decode_utf8_variants(bytes: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let special = if bytes[i] == 0xc0 && bytes.get(i + 1) == Some(&0x80) {
            Some(('\0', 2))
        } else if bytes[i] == 0xed && bytes.len() >= i + 6 && is_cesu8_pair(&bytes[i..i + 6]) {
            let b = &bytes[i..i + 6];
            let cp = (((b[1] & 0x0f) as u32) << 16)
                + (((b[2] & 0x3f) as u32) << 10)
                + (((b[4] & 0x0f) as u32) << 6)
                + (b[5] & 0x3f) as u32
                + 0x10000;
            Some((char::from_u32(cp)?, 6))
        } else {
            None
        };
        if let Some((c, len)) = special {
            out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
            out.push(c);
            i += len;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).ok()?);
    Some(out)
}

fn is_cesu8_pair(b: &[u8]) -> bool {
    b[0] == 0xed
        && (0xa0..=0xaf).contains(&b[1])
        && (0x80..=0xbf).contains(&b[2])
        && b[3] == 0xed
        && (0xb0..=0xbf).contains(&b[4])
        && (0x80..=0xbf).contains(&b[5])
}

/// Char sets of ftfy's `UTF8_CLUES`.
struct Clues {
    first_of_2: Vec<char>,
    first_of_3: Vec<char>,
    first_of_4: Vec<char>,
    continuation: Vec<char>,
    continuation_strict: Vec<char>,
}

fn sorted_chars(s: &str) -> Vec<char> {
    let mut v: Vec<char> = s.chars().collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn clues() -> &'static Clues {
    static CLUES: OnceLock<Clues> = OnceLock::new();
    CLUES.get_or_init(|| Clues {
        first_of_2: sorted_chars(CLUE_UTF8_FIRST_OF_2),
        first_of_3: sorted_chars(CLUE_UTF8_FIRST_OF_3),
        first_of_4: sorted_chars(CLUE_UTF8_FIRST_OF_4),
        continuation: sorted_chars(CLUE_UTF8_CONTINUATION),
        continuation_strict: sorted_chars(CLUE_UTF8_CONTINUATION_STRICT),
    })
}

fn has(set: &[char], c: char) -> bool {
    set.binary_search(&c).is_ok()
}

/// Length in chars of ftfy's `UTF8_DETECTOR_RE` match starting at `chars[i]`, if any:
/// `(?<![strict])([first_of_2][cont] | [first_of_3][cont]{2} | [first_of_4][cont]{3})+`.
fn utf8_detector_match(chars: &[char], i: usize) -> Option<usize> {
    let clues = clues();
    if i > 0 && has(&clues.continuation_strict, chars[i - 1]) {
        return None;
    }
    let mut pos = i;
    while let Some(&lead) = chars.get(pos) {
        let needed = if has(&clues.first_of_2, lead) {
            1
        } else if has(&clues.first_of_3, lead) {
            2
        } else if has(&clues.first_of_4, lead) {
            3
        } else {
            break;
        };
        let conts = chars.get(pos + 1..pos + 1 + needed);
        if !conts.is_some_and(|cs| cs.iter().all(|&c| has(&clues.continuation, c))) {
            break;
        }
        pos += 1 + needed;
    }
    (pos > i).then_some(pos - i)
}

/// ftfy `fixes.decode_inconsistent_utf8`: fixes each UTF-8-looking run on its own.
fn decode_inconsistent_utf8(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = utf8_detector_match(&chars, i) {
            let sub: String = chars[i..i + len].iter().collect();
            if len < chars.len() && is_bad(&sub) {
                out.push_str(&fix_encoding(&sub));
            } else {
                out.push_str(&sub);
            }
            i += len;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn has_utf8_detector_match(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len()).any(|i| utf8_detector_match(&chars, i).is_some())
}

/// `fixes.fix_c1_controls`: U+0080..U+009F read as their (sloppy) Windows-1252 characters.
pub(crate) fn fix_c1_controls(text: &str) -> String {
    if !text.chars().any(is_c1) {
        return text.to_owned();
    }
    let cp1252 = charmap("sloppy-windows-1252");
    text.chars()
        .map(|c| {
            if is_c1(c) {
                cp1252.decode_byte(c as u8)
            } else {
                c
            }
        })
        .collect()
}

fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// Strict (non-sloppy) Windows-1252 decoding: bytes 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined.
fn decode_strict_windows_1252(bytes: &[u8]) -> Option<String> {
    let cp1252 = charmap("sloppy-windows-1252");
    bytes
        .iter()
        .map(|&b| match b {
            0x81 | 0x8d | 0x8f | 0x90 | 0x9d => None,
            _ => Some(cp1252.decode_byte(b)),
        })
        .collect()
}

/// One step of ftfy's `fix_encoding` (`_fix_encoding_one_step_and_explain`, default config).
fn fix_encoding_one_step(text: &str) -> String {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return text.to_owned();
    }
    let mut latin1_possible = false;
    for (name, map) in &charmaps().all {
        let Some(mut bytes) = map.encode(text) else {
            continue;
        };
        if *name == "latin-1" {
            latin1_possible = true;
        }
        if *name != "macroman" && altered_utf8_regex().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if map.sloppy {
            bytes = replace_lossy_sequences(&bytes);
        }
        let decoded = if bytes.contains(&0xed) || bytes.contains(&0xc0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return fixed;
        }
    }
    if has_utf8_detector_match(text) {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return fixed;
        }
    }
    if latin1_possible {
        // ftfy checks for "windows-1252" among its candidates, a name never in its list (it
        // holds "sloppy-windows-1252"), so Latin-1 text is always re-read as strict Windows-1252.
        let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
        if let Some(fixed) = decode_strict_windows_1252(&bytes) {
            if fixed != text {
                return fixed;
            }
        }
    }
    if text.chars().any(is_c1) {
        return fix_c1_controls(text);
    }
    text.to_owned()
}

/// `ftfy.fix_encoding`: undoes mojibake until the text stops changing.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_owned();
    loop {
        let next = fix_encoding_one_step(&text);
        if next == text {
            return text;
        }
        text = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_encoding_examples() {
        assert_eq!(fix_encoding("sÃ³"), "só");
        assert_eq!(fix_encoding("Ã³"), "ó");
        assert_eq!(fix_encoding("&ATILDE;&SUP3;"), "&ATILDE;&SUP3;");
        assert_eq!(fix_encoding("(à¸‡'âŒ£')à¸‡"), "(ง'⌣')ง");
        assert_eq!(fix_encoding("schÃ¶n"), "schön");
        assert_eq!(fix_encoding("café"), "café");
    }

    #[test]
    fn utf8_variants_codec() {
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x8d").as_deref(),
            Some("😍")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\xbd"), None);
        assert_eq!(decode_utf8_variants(b"\xed\x95\x9c").as_deref(), Some("한"));
    }

    #[test]
    fn byte_a0_restoration() {
        assert_eq!(restore_byte_a0(b"voil\xc3 le"), b"voil\xc3\xa0 le");
        assert_eq!(restore_byte_a0(b"\xc3 s "), b"\xc3\xa0s ");
    }
}
