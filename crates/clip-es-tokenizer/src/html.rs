//! HTML character references, as CLIP's `basic_clean` meets them: Python's `html.unescape`
//! (applied twice after ftfy, clip/simple_tokenizer.py) and ftfy 6.3's stricter
//! `fixes.unescape_html` (only `&name;` and `&#...;` forms, plus all-caps Latin names).

use crate::tables::{FTFY_UPPER_ENTITIES, HTML5_ENTITIES};

fn html5_lookup(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| HTML5_ENTITIES[i].1)
}

/// Python's `html._invalid_charrefs`: numeric references the HTML5 standard remaps.
fn invalid_charref(num: u32) -> Option<&'static str> {
    Some(match num {
        0x00 => "\u{fffd}",
        0x0d => "\r",
        0x80 => "\u{20ac}",
        0x81 => "\u{81}",
        0x82 => "\u{201a}",
        0x83 => "\u{192}",
        0x84 => "\u{201e}",
        0x85 => "\u{2026}",
        0x86 => "\u{2020}",
        0x87 => "\u{2021}",
        0x88 => "\u{2c6}",
        0x89 => "\u{2030}",
        0x8a => "\u{160}",
        0x8b => "\u{2039}",
        0x8c => "\u{152}",
        0x8d => "\u{8d}",
        0x8e => "\u{17d}",
        0x8f => "\u{8f}",
        0x90 => "\u{90}",
        0x91 => "\u{2018}",
        0x92 => "\u{2019}",
        0x93 => "\u{201c}",
        0x94 => "\u{201d}",
        0x95 => "\u{2022}",
        0x96 => "\u{2013}",
        0x97 => "\u{2014}",
        0x98 => "\u{2dc}",
        0x99 => "\u{2122}",
        0x9a => "\u{161}",
        0x9b => "\u{203a}",
        0x9c => "\u{153}",
        0x9d => "\u{9d}",
        0x9e => "\u{17e}",
        0x9f => "\u{178}",
        _ => return None,
    })
}

/// Python's `html._invalid_codepoints`: numeric references that decode to nothing.
fn is_invalid_codepoint(num: u32) -> bool {
    matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (num & 0xfffe == 0xfffe && num <= 0x10ffff)
}

/// Python's `html._replace_charref` for a numeric reference (`num` saturates on overflow).
fn numeric_charref(num: u64, out: &mut String) {
    if num <= u32::MAX as u64 {
        if let Some(s) = invalid_charref(num as u32) {
            out.push_str(s);
            return;
        }
    }
    if (0xd800..=0xdfff).contains(&num) || num > 0x10ffff {
        out.push('\u{fffd}');
        return;
    }
    if is_invalid_codepoint(num as u32) {
        return;
    }
    out.push(char::from_u32(num as u32).expect("checked range"));
}

/// Length in bytes of the longest prefix of `s` made of at most `max` chars satisfying `pred`.
fn run_len(s: &str, max: usize, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .take(max)
        .find(|&(_, c)| !pred(c))
        .map_or_else(|| s.chars().take(max).map(char::len_utf8).sum(), |(i, _)| i)
}

/// Python's `html.unescape`: the HTML5 rules for named and numeric references, including
/// names without `;` (longest known prefix) and the remapping of invalid code points.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let consumed = unescape_one(after, &mut out);
        match consumed {
            Some(n) => rest = &after[n..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Tries the `html._charref` pattern right after a `&`; on a match appends the replacement and
/// returns the number of bytes consumed after the `&`.
fn unescape_one(after: &str, out: &mut String) -> Option<usize> {
    let bytes = after.as_bytes();
    if bytes.first() == Some(&b'#') {
        // `#[0-9]+;?` then `#[xX][0-9a-fA-F]+;?`
        let digits = run_len(&after[1..], usize::MAX, |c| c.is_ascii_digit());
        let (start, len, radix) = if digits > 0 {
            (1, digits, 10)
        } else if matches!(bytes.get(1), Some(b'x' | b'X')) {
            let hex = run_len(&after[2..], usize::MAX, |c| c.is_ascii_hexdigit());
            if hex == 0 {
                return None;
            }
            (2, hex, 16)
        } else {
            return None;
        };
        let num = after[start..start + len].chars().fold(0u64, |acc, c| {
            acc.saturating_mul(radix)
                .saturating_add(c.to_digit(radix as u32).unwrap() as u64)
        });
        numeric_charref(num, out);
        let mut end = start + len;
        if bytes.get(end) == Some(&b';') {
            end += 1;
        }
        return Some(end);
    }
    // `[^\t\n\f <&#;]{1,32};?`
    let name_len = run_len(after, 32, |c| {
        !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';')
    });
    if name_len == 0 {
        return None;
    }
    let mut end = name_len;
    if bytes.get(end) == Some(&b';') {
        end += 1;
    }
    let name = &after[..end];
    if let Some(v) = html5_lookup(name) {
        out.push_str(v);
        return Some(end);
    }
    // The longest prefix of at least two chars that is a known name (e.g. "&ampfoo" -> "&foo").
    let cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in cuts.iter().rev() {
        if let Some(v) = html5_lookup(&name[..cut]) {
            out.push_str(v);
            out.push_str(&name[cut..]);
            return Some(end);
        }
    }
    out.push('&');
    out.push_str(name);
    Some(end)
}

/// ftfy 6.3 `fixes.unescape_html`: replaces the matches of `&#?[0-9A-Za-z]{1,24};` that are
/// known entity names (HTML5 names ending in `;`, or ftfy's all-caps Latin ones) or complete
/// numeric references; everything else is left as it is.
pub(crate) fn ftfy_unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let hash = usize::from(after.starts_with('#'));
        let body = &after[hash..];
        let alnum = body.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if (1..=24).contains(&alnum) && body.as_bytes().get(alnum) == Some(&b';') {
            let entity = &rest[amp..amp + 1 + hash + alnum + 1];
            out.push_str(&ftfy_entity(entity));
            rest = &rest[amp + entity.len()..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's `_unescape_fixup` for one `&...;` match.
fn ftfy_entity(entity: &str) -> String {
    let name = &entity[1..];
    if let Some(v) = html5_lookup(name) {
        return v.to_owned();
    }
    if let Ok(i) = FTFY_UPPER_ENTITIES.binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
    {
        return FTFY_UPPER_ENTITIES[i].1.to_owned();
    }
    if entity.starts_with("&#") {
        let unescaped = html_unescape(entity);
        // A partial decode (the `;` left over) is not what ftfy wants: keep the original.
        if !unescaped.contains(';') {
            return unescaped;
        }
    }
    entity.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_unescape_cases() {
        assert_eq!(html_unescape("&amp;&lt;b&gt;"), "&<b>");
        assert_eq!(html_unescape("&ampfoo; &copy 2020"), "&foo; © 2020");
        assert_eq!(
            html_unescape("&#65;&#x42;&#X43&#0;&#128;&#x85;&#xD800;&#1114112;&#1;"),
            "ABC\u{fffd}€…\u{fffd}\u{fffd}"
        );
        assert_eq!(
            html_unescape("&#x;&#;& amp;&bogus;"),
            "&#x;&#;& amp;&bogus;"
        );
        assert_eq!(html_unescape("&notit;"), "¬it;");
        assert_eq!(html_unescape("&#99999999999999999999999;"), "\u{fffd}");
    }

    #[test]
    fn ftfy_unescape_cases() {
        assert_eq!(ftfy_unescape_html("&lt;tag&gt;"), "<tag>");
        assert_eq!(ftfy_unescape_html("P&EACUTE;REZ &SZLIG;"), "PÉREZ SS");
        assert_eq!(
            ftfy_unescape_html("&ntilde; &Ntilde; &NTILDE; &nTILDE;"),
            "ñ Ñ Ñ &nTILDE;"
        );
        assert_eq!(
            ftfy_unescape_html("this&not that &amp &#59; &#12a; &#x41;"),
            "this&not that &amp &#59; &#12a; A"
        );
        assert_eq!(
            ftfy_unescape_html("&Jscr;ohn &HilbertSpace;ancock"),
            "𝒥ohn ℋancock"
        );
    }
}
