"""Random stress cases for crates/clip-es-tokenizer, compared outside `cargo test`.

    python tools/stress_tokenizer.py SEED COUNT OUT.json
    cargo run --release -p clip-es-tokenizer --example compare_with_python -- OUT.json

Writes COUNT random strings (printable and control ASCII, Latin, random code points of the BMP and
the supplementary planes, emoji, combining marks, Hangul jamo, Hebrew/Arabic/Devanagari/kana,
HTML5 entities in lower and upper case, numeric references, mojibake made by re-decoding UTF-8
with ftfy's single-byte codecs, ANSI escapes, `<`, line breaks) with, for each, `ftfy.fix_text`,
OpenAI CLIP's cleaned text and its `SimpleTokenizer.encode` ids (the reference checkout's
$OFFICIAL_REPO/clip). The example prints every difference. Nothing here is used by the tests.
"""
import html.entities
import json
import os
import random
import sys
import warnings

warnings.filterwarnings("ignore")
repo = os.environ.get("OFFICIAL_REPO")
if not repo:
    sys.exit("set OFFICIAL_REPO to a checkout of linyq2117/CLIP-ES")
sys.path.insert(0, repo)

import ftfy  # noqa: E402
from clip.simple_tokenizer import SimpleTokenizer, basic_clean, whitespace_clean  # noqa: E402

ENCODINGS = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
             "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2",
             "macroman", "cp437", "windows-1252"]
SPECIAL = ("\u2018\u2019\u201c\u201d\u2026\u2013\u2014\u00a0\u3000\u2028\u2029\u0085\ufeff\u200b"
           "\u0301\u0345\u03a3\u0130ﬁﬂＡａ１ｶﾞ€™")


def main():
    seed, count, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    tok = SimpleTokenizer()
    entities = list(html.entities.html5.keys())

    def rand_char():
        r = rng.random()
        if r < 0.3:
            return chr(rng.randint(0x20, 0x7E))
        if r < 0.45:
            return chr(rng.randint(0xA0, 0x24F))
        if r < 0.55:
            return chr(rng.randint(0x0, 0x20))
        if r < 0.6:
            return chr(rng.randint(0x80, 0x9F))
        if r < 0.72:
            while True:
                cp = rng.randint(0x100, 0x2FFFF)
                if not 0xD800 <= cp <= 0xDFFF:
                    return chr(cp)
        if r < 0.82:
            return chr(rng.choice([rng.randint(0x300, 0x36F), rng.randint(0x1100, 0x11FF),
                                   rng.randint(0x590, 0x6FF), rng.randint(0x900, 0x97F),
                                   rng.randint(0x3040, 0x30FF), 0x0A, 0x3C, 0x26]))
        if r < 0.92:
            return rng.choice(SPECIAL)
        return chr(rng.randint(0x1F300, 0x1FAFF))

    def piece():
        r = rng.random()
        if r < 0.4:
            return "".join(rand_char() for _ in range(rng.randint(1, 6)))
        if r < 0.55:
            e = rng.choice(entities)
            return "&" + (e if rng.random() < 0.8 else e.upper())
        if r < 0.6:
            return "&#%d;" % rng.randint(0, 0x110000) if rng.random() < 0.5 else "&#x%x;" % rng.randint(0, 0x11000)
        if r < 0.9:
            s = "".join(rand_char() for _ in range(rng.randint(1, 5)))
            m = s.encode("utf-8").decode(rng.choice(ENCODINGS), errors="replace")
            return m.replace("\xa0", " ") if rng.random() < 0.3 else m
        return rng.choice(["don't", "it's", "We'RE", " ", "  ", "\n", "\t", "<b>", "<", "\x1b[1m", "'ll", "'S"])

    out = []
    for _ in range(count):
        t = "".join(piece() for _ in range(rng.randint(1, 6)))
        out.append({"text": t, "fixed": ftfy.fix_text(t), "clean": whitespace_clean(basic_clean(t)).lower(),
                    "ids": tok.encode(t)})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print("wrote %d cases to %s" % (len(out), out_path))


if __name__ == "__main__":
    main()
