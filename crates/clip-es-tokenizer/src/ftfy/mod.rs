//! A port of `ftfy.fix_text` (ftfy 6.3.1, default `TextFixerConfig`), the first step of CLIP's
//! `basic_clean` (clip/simple_tokenizer.py). Same fixers, same order, same fixed-point loop:
//!
//! per line (each segment ends after a `\n`; ftfy's 1,000,000-char segment cap is kept), repeat
//! until nothing changes: `unescape_html` -> `fix_encoding` -> `fix_c1_controls` ->
//! `fix_latin_ligatures` -> `fix_character_width` -> `uncurl_quotes` -> `fix_line_breaks` ->
//! `fix_surrogates` -> `remove_terminal_escapes` -> `remove_control_chars` -> NFC.
//!
//! As in ftfy, `unescape_html="auto"` turns entity decoding off for a segment containing `<`
//! and for every later segment of the same call.
//!
//! Character data (HTML5 entities, ftfy's categories and codecs, Python's `\d` and `\w`, NFC's
//! Unicode 14 tables) is generated from the Python the goldens come from (`src/tables.rs`, by
//! tools/gen_tokenizer_tables.py).
//!
//! Known difference from Python: `fix_surrogates` has nothing to do, since a Rust `&str` cannot
//! hold UTF-16 surrogates (Python strings can, e.g. from `surrogateescape` decoding).

mod mojibake;

use crate::html::ftfy_unescape_html;
use crate::nfc::nfc;
use crate::pystr::is_py_decimal;
use crate::tables::{LIGATURES, WIDTH_MAP};

pub use mojibake::{fix_encoding, is_bad};

/// ftfy's `max_decode_length`: the longest segment fixed at once, in chars.
const MAX_DECODE_LENGTH: usize = 1_000_000;

/// `ftfy.fix_text(text)` with the default configuration.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape_html = true;
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let cap = rest
            .char_indices()
            .nth(MAX_DECODE_LENGTH)
            .map_or(rest.len(), |(i, _)| i);
        let end = line_end.min(cap);
        let segment = &rest[..end];
        if segment.contains('<') {
            // ftfy replaces its config here, so the change sticks for the following segments.
            unescape_html = false;
        }
        out.push_str(&fix_segment(segment, unescape_html));
        rest = &rest[end..];
    }
    out
}

/// `ftfy.fix_and_explain(segment)`: applies every fixer until the text stops changing.
fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let original = text.clone();
        if unescape_html {
            text = ftfy_unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = mojibake::fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = nfc(&text);
        if text == original {
            return text;
        }
    }
}

fn map_chars(text: &str, table: &[(char, &str)]) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match table.binary_search_by_key(&c, |&(k, _)| k) {
            Ok(i) => out.push_str(table[i].1),
            Err(_) => out.push(c),
        }
    }
    out
}

/// `fix_latin_ligatures`: ﬁ -> fi, Ĳ -> IJ, ǅ -> Dž, ...
fn fix_latin_ligatures(text: &str) -> String {
    map_chars(text, LIGATURES)
}

/// `fix_character_width`: full-width ASCII and half-width kana to their usual forms, U+3000 to space.
fn fix_character_width(text: &str) -> String {
    map_chars(text, WIDTH_MAP)
}

/// `uncurl_quotes`: U+02BC and U+2018..U+201B -> `'`, U+201C..U+201F -> `"`.
fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            c => c,
        })
        .collect()
}

/// `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and U+0085 -> `\n`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `remove_terminal_escapes`: drops ANSI sequences `ESC [ (\d|;)* [a-zA-Z]` (`\d`: any Nd digit).
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(esc) = rest.find("\u{1b}[") {
        out.push_str(&rest[..esc]);
        let body = &rest[esc + 2..];
        let params = body
            .char_indices()
            .find(|&(_, c)| !(c == ';' || is_py_decimal(c)))
            .map_or(body.len(), |(i, _)| i);
        match body[params..].chars().next() {
            Some(c) if c.is_ascii_alphabetic() => rest = &body[params + 1..],
            _ => {
                out.push('\u{1b}');
                rest = &rest[esc + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `remove_control_chars`: C0 controls except `\t \n \x0c \r`, DEL, U+206A..U+206F, U+FEFF,
/// U+FFF9..U+FFFC.
fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
                | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_docstring_examples() {
        assert_eq!(fix_text("âœ” No problems"), "✔ No problems");
        assert_eq!(fix_text("&macr;\\_(ã\u{83}\u{84})_/&macr;"), "¯\\_(ツ)_/¯");
        assert_eq!(
            fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"),
            "Broken text… it's flubberific!"
        ); // (ftfy 6.3 keeps the ellipsis, whatever its docstring says)
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(
            fix_text("\u{1b}[36;44mI'm blue, da ba dee da ba doo...\u{1b}[0m"),
            "I'm blue, da ba dee da ba doo..."
        );
        assert_eq!(fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(fix_text("Ｕﾀｰﾝ"), "Uターン");
        assert_eq!(fix_text("voilÃ le travail"), "voilà le travail");
    }

    #[test]
    fn html_auto_rule_sticks_to_later_lines() {
        assert_eq!(fix_text("&amp;\n<b>&amp;\n&amp;"), "&\n<b>&amp;\n&amp;");
        assert_eq!(fix_text("a &amp;lt; b"), "a < b");
    }

    #[test]
    fn line_breaks_and_controls() {
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("x\u{0}\u{7}\u{7f}\u{feff}y\t"), "xy\t");
        assert_eq!(fix_text("e\u{301}"), "é");
    }
}
