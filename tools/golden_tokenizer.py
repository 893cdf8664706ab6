"""Golden files for crates/clip-es-tokenizer: token ids from OpenAI's own CLIP tokenizer.

Run from the repository root (needs a checkout of the reference named by OFFICIAL_REPO; torch, ftfy, regex):

    python tools/golden_tokenizer.py

It imports the reference's `clip` package ($OFFICIAL_REPO/clip: `clip.tokenize` and its
`SimpleTokenizer`, with the bundled bpe_simple_vocab_16e6.txt.gz) and writes, under
crates/clip-es-tokenizer/tests/data/:

- tokenize_golden.json: for every CLIP-ES prompt (`a clean origami {}.` over the VOC and COCO
  class names with synonyms and the background words of $OFFICIAL_REPO/clip_text.py) and for a few
  hundred varied strings: the text, its cleaned form (`whitespace_clean(basic_clean(t)).lower()`),
  the BPE ids of `SimpleTokenizer.encode` and the unpadded row of `clip.tokenize(t, truncate=True)`
  (zeros after it are padding; the script checks that). Ids of rows longer than 77 also say that
  `clip.tokenize(t)` raised.
- ftfy_golden.json: `ftfy.fix_text` on generated mojibake; `ftfy.badness.is_bad` on every ordered
  pair of the characters ftfy's heuristic looks at (bitmap, bit i*n+j for pool[i]+pool[j], least
  significant bit first) and on random strings of them.
- custom_vocab/: a small CLIP-format vocabulary (the 512 byte symbols, the first 300 merges of
  OpenAI's file, the two special tokens) in OpenAI's format (bpe.txt.gz) and Hugging Face's
  (vocab.json + merges.txt, tokenizer.json with "a b" merges, tokenizer_pairs.json with ["a","b"]
  merges), and custom_golden.json: `SimpleTokenizer(bpe.txt.gz).encode` of test strings.

Everything is deterministic (fixed random seed, gzip mtime 0).
"""
import gzip
import json
import os
import random
import sys
import warnings

warnings.filterwarnings("ignore")
def official_repo():
    """The reference checkout (linyq2117/CLIP-ES) named by $OFFICIAL_REPO."""
    repo = os.environ.get("OFFICIAL_REPO")
    if not repo:
        sys.exit("set OFFICIAL_REPO to a checkout of linyq2117/CLIP-ES")
    return repo


OFFICIAL = official_repo()
sys.path.insert(0, OFFICIAL)

import ftfy  # noqa: E402
import ftfy.badness  # noqa: E402
import clip  # noqa: E402  (the reference's package)
from clip.simple_tokenizer import SimpleTokenizer, basic_clean, whitespace_clean  # noqa: E402
import clip_text  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clip-es-tokenizer", "tests", "data")

HAND_STRINGS = [
    # plain prompts and punctuation
    "a photo of a cat.", "A Photo Of A CAT!", "a clean origami person with clothes,people,human.",
    "hello, world!!!", "what?!", "...", "a -- b", "x+y=z", "50% off", "$100.99", "#hashtag @user",
    "e-mail: someone@example.com", "https://example.com/path?q=1&r=2", "C:\\path\\to\\file.txt",
    "(parentheses) [brackets] {braces}", "quote \"double\" and 'single'", "semi;colon:colon",
    "a_b_c", "tilde~caret^pipe|", "back`tick", "<angle> brackets", "1 < 2 and 3 > 2",
    # digits
    "123", "2023-01-01", "3.14159", "1,000,000", "route 66", "4k 8K 1080p", "0x1F", "a1b2c3",
    "٣ arabic-indic digit", "Ⅻ roman twelve", "½ half", "²³ superscripts", "①②③ circled",
    # contractions
    "don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "DON'T SHOUT", "IT'S",
    "'s 't 're 've 'm 'll 'd", "rock'n'roll", "o'clock", "y'all'd've", "''quoted''", "'tis",
    "dogs' bowls", "it\u2019s curly", "\u2018single curly\u2019", "\u201cdouble curly\u201d",
    "\u201ehalf low\u201f", "\u02bcmodifier apostrophe", "it\u02bcs",
    # accents and scripts
    "café", "naïve façade", "résumé", "Straße", "ÀÉÎÕÜ", "ñandú", "crème brûlée", "smörgåsbord",
    "Łódź", "čšž", "İstanbul", "ıi", "ΟΔΥΣΣΕΥΣ", "Σ", "ΑΣ.", "σς", "Ελληνικά γράμματα", "Москва",
    "ПРИВЕТ мир", "日本語のテキスト", "中文字符测试", "한국어 텍스트", "ไทย", "עברית", "العربية",
    "مرحبا بالعالم", "हिन्दी", "ქართული", "Ωmega", "ǅungla", "ǈ ǋ ǲ",
    "e\u0301 combining acute", "cafe\u0301", "\u1e9e capital sharp s", "\u0130\u0307",
    "ω\u0345 ypogegrammeni", "a\u0345b", "ﬅ ﬆ", "ſtraße", "'ſ", "K kelvin", "Å angstrom",
    # emoji and symbols
    "I love pizza 🍕", "👍👍👍", "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "❤️ heart", "☃ snowman", "😀😃😄",
    "★☆", "♠♣♥♦", "→ ← ↑ ↓", "∑∫√∞", "©®™", "€£¥₹", "°C", "µm", "§ ¶", "•bullet", "…ellipsis",
    "—em dash– en dash", "¡Hola! ¿Qué?", "«guillemets»", "‹single›",
    # HTML entities
    "&amp;", "Tom &amp; Jerry", "&#39;quoted&#39;", "&lt;b&gt;bold&lt;/b&gt;", "<b>real html</b>",
    "&quot;hi&quot;", "&nbsp;space", "caf&eacute;", "&Eacute;COLE", "&EACUTE;COLE", "&amp;amp;",
    "&amp;lt;p&amp;gt;", "&#x41;&#x42;", "&#65;&#66;", "&#128512;", "&#x1F600;", "&#0;", "&#59;",
    "&#12a;", "&copy 2020", "&copy; 2020", "AT&T", "fish & chips", "&notit;", "&notin;", "&bogus;",
    "&#xD800;", "&#1114112;", "&#128;", "&#x85;", "a&nbsp;b", "&hellip;", "&ntilde; &Ntilde; &NTILDE; &nTILDE;",
    "&lt;3 &lt;3", "x &lt; y < z &gt; w", "&SZLIG;", "P&EACUTE;REZ", "&Jscr;ohn", "&amp",
    "&ampersand", "&AMP;", "&#X41;", "&#x;", "&#;", "& amp;",
    # whitespace
    "tab\tseparated", "new\nline", "carriage\rreturn", "crlf\r\nline", "  leading and trailing  ",
    "multiple     spaces", "nbsp\u00a0here", "em\u2003space", "ideographic\u3000space",
    "zero\u200bwidth", "line\u2028sep", "para\u2029sep", "nel\u0085char", "vt\x0bff\x0c",
    "\x1cfile sep\x1d", "narrow\u202fnbsp", "\t\n mixed \r\n\t", "", "   ", "\n",
    "ogham\u1680space", "mongolian\u180evowel", "word\u2060joiner", "bom\ufeffinside",
    # controls and escapes
    "bell\x07char", "nul\x00char", "del\x7fchar", "\x1b[31mred text\x1b[0m", "esc\x1b[1;2Hmove",
    "c1\x80\x81\x9fcontrols", "\u206adeprecated", "obj\ufffcrepl", "repl\ufffdchar",
    "soft\u00adhyphen", "rtl\u200fmark", "tag\U000E0041chars",
    # ligatures and width
    "ﬁne ﬂower", "oﬀice eﬃcient", "Ĳsselmeer", "ǆungla", "ＬＯＵＤ　ＮＯＩＳＥＳ", "ＡＢＣ１２３",
    "ｈａｌｆ ｗｉｄｔｈ", "ｶﾀｶﾅ", "Ｕﾀｰﾝ", "！？", "ﾞ", "￦ won", "〜 wave",
    # mojibake
    "cafÃ©", "CafÃ© au lait", "naÃ¯ve", "Ã  la mode", "voilÃ  le travail", "Ã©tÃ©", "schÃ¶n",
    "â€œquotedâ€\x9d", "â€œquotedâ€�", "itâ€™s", "donâ€™t", "Ã¢â‚¬â„¢ double", "âœ” No problems",
    "&macr;\\_(ã\x83\x84)_/&macr;", "sÃ³", "Ã³", "ÐŸÑ€Ð¸Ð²ÐµÑ‚", "Ã¼ber", "Ã\xa0 bientÃ´t",
    "(à¸‡'âŒ£')à¸‡", "Ãºltimo", "Ã±", "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.",
    "ÃƒÂ©", "Ã\x89cole", "ÐšÐ°Ðº Ð´ÐµÐ»Ð°?", "æ—¥æœ¬èªž", "ðŸ˜€", "ðŸ‘", "â€¢ bullet",
    "l'Ã©tÃ© Ã  Paris", "MÃ¼nchen", "Ã‡a va", "Ã…ngstrÃ¶m", "ÃŸ", "Ã†", "Ã˜resund",
    "ÐŸ", "Ð¾Ðº", "Ã¢â€ž¢", "Ãƒ", "â„¢", "Â£100", "Â©2020", "100Â°C", "Â¿QuÃ©?",
    "Ã¨ Ã¨", "Ã  ", " Ã ", "aÃ ", "sÃ\xa0", "â€“", "Ã©\nÃ©", "cafÃ©\ncafÃ©", "<p>cafÃ©</p>",
    "cafÃ©<", "Ã\x83Â©", "AT&amp;T cafÃ©", "ÄŸ", "Å›", "Ä…", "ĂŠ", "Î±Î²Î³", "ÎŸ",
    # long words and repetition
    "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious",
    "a" * 60, "ab" * 40, "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "hippopotomonstrosesquippedaliophobia antidisestablishmentarianism",
    "thequickbrownfoxjumpsoverthelazydog" * 3,
    # special tokens inside text
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<|STARTOFTEXT|>", "<|ſtartoftext|>",
    "<|startoftext|>hello<|endoftext|>", "<|unknown|>",
]


def generated_strings(rng):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r\u00a0\u2003\u3000",
        ".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÉÎÕÜ",
        "αβγδεζηθΣΩабвгдежзДЖЗ",
        "日本語中文字한국어テキスト",
        "😀🍕👍❤🇫🇷",
        "\u2018\u2019\u201c\u201d\u2026\u2013\u2014",
        "ﬁﬂﬀＡＢＣａｂｃ１２３",
    ]
    entity_bits = ["&amp;", "&lt;", "&gt;", "&#39;", "&quot;", "&nbsp;", "&eacute;", "&#x263A;"]
    words = ["dog", "cat", "person", "tree", "sky", "bicycle", "tvmonitor", "it's", "we're", "don't"]
    out = []
    for _ in range(160):
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(words))
            elif r < 0.45:
                parts.append(rng.choice(entity_bits))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
            parts.append(rng.choice([" ", " ", "", "\t", "  "]))
        out.append("".join(parts))
    return out


def prompts():
    names = (clip_text.new_class_names + clip_text.BACKGROUND_CATEGORY + clip_text.new_class_names_coco
             + clip_text.BACKGROUND_CATEGORY_COCO + clip_text.class_names + clip_text.class_names_coco)
    seen, out = set(), []
    for name in names:
        p = "a clean origami {}.".format(name)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def tokenize_record(tok, text):
    ids = tok.encode(text)
    row = clip.tokenize([text], truncate=True)[0].tolist()
    n = min(len(ids) + 2, 77)
    assert all(v == 0 for v in row[n:]), text
    row = row[:n]
    if len(ids) + 2 <= 77:
        assert row == [49406] + ids + [49407]
        assert clip.tokenize([text])[0].tolist()[:n] == row
    else:
        try:
            clip.tokenize([text])
            raise AssertionError("expected too long: %r" % text)
        except RuntimeError:
            pass
    return {"text": text, "clean": whitespace_clean(basic_clean(text)).lower(), "ids": ids, "row": row}


def mojibake_cases(rng):
    samples = ["café", "naïve", "Straße", "crème brûlée", "Łódź", "smörgåsbord", "à la carte",
               "“quoted”", "it’s", "—dash—", "…", "€100", "Москва", "Ελληνικά", "日本語", "😀 smile",
               "ñandú", "Ørsted", "İstanbul", "çà et là", "Ğ ş ı", "Ā ē ī", "señor", "über", "™ ® ©",
               "→", "✔ done", "½", "µ", "ℓ", "ŭ", "ő", "ţ"]
    encodings = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
                 "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2",
                 "macroman", "cp437", "windows-1252"]
    cases = set()
    for s in samples:
        b = s.encode("utf-8")
        for enc in encodings:
            try:
                m = b.decode(enc, errors="replace")
            except LookupError:
                continue
            cases.add(m)
            cases.add(m.replace("\xa0", " "))
            cases.add("prefix " + m + " suffix")
            cases.add("good é then " + m)
            try:
                cases.add(m.encode("utf-8").decode("sloppy-windows-1252"))  # doubly broken
            except UnicodeDecodeError:
                pass
    cases = sorted(cases)
    rng.shuffle(cases)
    return [{"text": t, "fixed": ftfy.fix_text(t)} for t in cases]


def badness_cases(rng):
    """is_bad on every ordered pair of a pool of characters (as a bitmap) and on random strings."""
    import re
    pool = set("aZz ,.?!_1\t\n")
    for body in ftfy.badness.MOJIBAKE_CATEGORIES.values():
        pool.update(ch for ch in map(chr, range(0x80, 0x2600)) if re.match("[" + body + "]", ch))
    # the characters the pattern names literally
    pattern = ftfy.badness.BADNESS_RE.pattern
    pool.update(ch for ch in pattern if ord(ch) >= 0x80)
    pool.update("\uf8ff")
    pool = "".join(sorted(pool))
    bits = []
    for a in pool:
        for b in pool:
            bits.append(ftfy.badness.is_bad(a + b))
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i // 8] |= 1 << (i % 8)
    strings = []
    for _ in range(3000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(3, 6)))
        strings.append([s, ftfy.badness.is_bad(s)])
    return {"pool": pool, "pair_bits_hex": packed.hex(), "strings": strings}


def custom_vocab(official_bpe):
    lines = gzip.open(official_bpe).read().decode("utf-8").split("\n")
    merges = lines[1:301]
    text = "#version: custom test vocabulary (first 300 merges of OpenAI's bpe_simple_vocab_16e6)\n" + "\n".join(merges)
    d = os.path.join(DATA, "custom_vocab")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "bpe.txt.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(text.encode("utf-8"), mtime=0))
    tok = SimpleTokenizer(bpe_path=path)
    assert len(tok.encoder) == 512 + 300 + 2
    vocab = dict(sorted(tok.encoder.items(), key=lambda kv: kv[1]))
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    for name, form in (("tokenizer.json", lambda m: m), ("tokenizer_pairs.json", lambda m: m.split(" "))):
        tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
              "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>",
                        "end_of_word_suffix": "</w>", "vocab": vocab, "merges": [form(m) for m in merges]}}
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
    texts = ["a clean origami dog.", "the quick brown fox jumps over the lazy dog",
             "Hello, World! It's 2024.", "café naïve 日本語 😀", "an interesting international test",
             "<|startoftext|> and <|endoftext|>", "tvmonitor screen", "person with clothes,people,human",
             "thethethe inin onon", "&amp; &lt;b&gt;", "  spaced   out  ", "ZEBRA zebra Zebra"]
    golden = [{"text": t, "ids": tok.encode(t), "sot": tok.encoder["<|startoftext|>"],
               "eot": tok.encoder["<|endoftext|>"]} for t in texts]
    with open(os.path.join(DATA, "custom_golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=0)


def main():
    rng = random.Random(20240607)
    tok = SimpleTokenizer()
    texts = prompts() + HAND_STRINGS + generated_strings(rng)
    long_text = " ".join(["a clean origami photograph of a"] * 20)
    texts.append(long_text)
    texts.append("a clean origami " + "very " * 73 + "dog.")  # exactly at the limit
    texts.append("a clean origami " + "very " * 74 + "dog.")  # one over
    records = [tokenize_record(tok, t) for t in texts]
    n_prompts = len(prompts())
    with open(os.path.join(DATA, "tokenize_golden.json"), "w", encoding="utf-8") as f:
        f.write('{"prompt_count": %d, "records": [\n' % n_prompts)
        f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in records))
        f.write("\n]}\n")
    ftfy_data = {"fix_text": mojibake_cases(rng), "is_bad": badness_cases(rng)}
    with open(os.path.join(DATA, "ftfy_golden.json"), "w", encoding="utf-8") as f:
        json.dump(ftfy_data, f, ensure_ascii=False, indent=0)
    custom_vocab(os.path.join(OFFICIAL, "clip", "bpe_simple_vocab_16e6.txt.gz"))
    print("%d tokenize records (%d prompts), %d fix_text cases, %d is_bad pairs + %d strings"
          % (len(records), n_prompts, len(ftfy_data["fix_text"]), len(ftfy_data["is_bad"]["pool"]) ** 2,
             len(ftfy_data["is_bad"]["strings"])))


if __name__ == "__main__":
    main()
