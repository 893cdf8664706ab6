"""tools/module_cycles.py: finds an import circle between the modules of a crate, does not count
a re-export as a use, and finds none in any crate of the tree (the pixel types, the weights error, the dtype
conversions, the class limit and the frozen batch norm's type name each in a module that
does not lead back)."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOOL = os.path.join(ROOT, "tools", "module_cycles.py")


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def crate(root, files):
    for path, text in files.items():
        full = os.path.join(root, "crates", "demo", "src", path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    return str(root)


def test_a_circle_is_listed_and_fails(tmp_path):
    root = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\nmod c;\n",
        "a.rs": "use crate::b::B;\npub struct A;\n",
        "b.rs": "pub struct B;\npub fn f() -> super::a::A { crate::a::A }\n",
        "c.rs": "// use crate::a::A; only a comment\npub fn g() -> &'static str { \"crate::a::A\" }\n",
    })
    out = run(root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "demo: a -> b -> a" in out.stdout, out.stdout
    assert "c" not in out.stdout.replace("cycle", ""), out.stdout


def test_reexports_and_test_modules_are_no_use(tmp_path):
    root = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\npub use a::A;\npub use b::B;\n",
        "a.rs": "use crate::B;\npub struct A(B);\n#[cfg(test)]\nmod tests {\n    use crate::b::f;\n}\n",
        "b.rs": "pub struct B;\npub fn f() {}\n",
    })
    out = run(root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "no module cycles"


def test_no_circle_in_image_model_pickle_and_tokenizer():
    out = run(ROOT, "clip-es-image", "clip-es-model", "clip-es-pickle", "clip-es-tokenizer")
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_circle_in_any_crate():
    out = run(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "no module cycles", out.stdout
