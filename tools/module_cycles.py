#!/usr/bin/env python3
"""Lists the import cycles between the modules of each crate of the workspace (stdlib only).

    python3 tools/module_cycles.py [ROOT [CRATE...]]
    # ROOT: the repository (default: this checkout); CRATE: only these crates (default: all)

For every crate under ROOT/crates, each crate root (src/lib.rs, src/main.rs, src/bin/*.rs) and
the file modules it declares with `mod NAME;` are the nodes. A module depends on another when
its code names a path into it: `use crate::a::b::X;`, `super::X`, `self::a::X`, a child module
by its bare name, or such a path written inline (`crate::a::f()`). A path is followed to the
module that defines the item, also through `pub use` re-exports (so `crate::X` re-exported by
lib.rs from `a` is a dependency on `a`); a `pub use` itself is no dependency (a re-export is a
facade, not a use). Comments, strings and `#[cfg(test)]` modules are left out: test code may
reach anywhere. Inline `mod name { ... }` blocks count as part of their file.

Prints one line per cycle (`crate: a -> b -> a`), every strongly connected set of modules
once with one cycle through it, and exits 1 if there is any; prints `no module cycles` and
exits 0 otherwise.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Removes comments, string and char literals (kept as empty quotes), keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'":
            # a char literal ('a', '\n', '\u{..}'), not a lifetime ('a)
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """Removes `#[cfg(test)] mod name { ... }` blocks (test code is no architecture)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", code)
        if not m:
            return code
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[:m.start()] + code[i:]


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (`as` renames dropped)."""
    tree = re.sub(r"\s+", " ", tree).strip()
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    depth = 0
    for i, c in enumerate(tree):
        if c == "{":
            if depth == 0:
                prefix = tree[:i]
                inner = tree[i + 1:tree.rindex("}")]
                parts, d, start = [], 0, 0
                for j, cc in enumerate(inner):
                    d += {"{": 1, "}": -1}.get(cc, 0)
                    if cc == "," and d == 0:
                        parts.append(inner[start:j])
                        start = j + 1
                parts.append(inner[start:])
                out = []
                for p in parts:
                    p = p.strip()
                    if not p:
                        continue
                    if p == "self":
                        out.append(prefix.rstrip(":").strip())
                    else:
                        out.extend(prefix + q for q in expand_use(p))
                return out
            depth += 1
    return [tree]


class Module:
    def __init__(self, path, file, code):
        self.path = path  # tuple of names below the crate root
        self.file = file
        self.code = code
        self.children = {}  # name -> tuple path
        self.reexports = {}  # name -> absolute path (tuple of names) it re-exports
        self.globs = []  # absolute module paths re-exported with `pub use m::*`
        self.items = set(re.findall(
            r"\b(?:fn|struct|enum|trait|type|const|static|union|macro_rules!)\s+(" + IDENT + ")", code))


def module_file(dirpath, name):
    for cand in (os.path.join(dirpath, name + ".rs"), os.path.join(dirpath, name, "mod.rs")):
        if os.path.isfile(cand):
            return cand
    return None


def load_tree(root_file):
    """The file modules reachable from a crate root, by path tuple."""
    modules = {}

    def visit(path, file, child_dir):
        with open(file, encoding="utf-8") as f:
            code = drop_test_modules(strip_code(f.read()))
        mod = Module(path, file, code)
        modules[path] = mod
        for m in re.finditer(r"(#\[path\s*=\s*\"\"\]\s*)?(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", code):
            name = m.group(2)
            child = module_file(child_dir, name)
            if child is None:
                continue
            mod.children[name] = path + (name,)
            sub_dir = os.path.dirname(child) if child.endswith("mod.rs") else os.path.join(child_dir, name)
            visit(path + (name,), child, sub_dir)

    visit((), root_file, os.path.dirname(root_file))
    return modules


def absolute(modules, here, parts):
    """Turns a path as written in module `here` into a path from the crate root, or None
    (an external crate or std)."""
    if not parts:
        return None
    base = list(here)
    head, rest = parts[0], parts[1:]
    if head == "crate":
        base = []
    elif head == "self":
        pass
    elif head == "super":
        base = base[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif head in modules[here].children:
        rest = parts
    else:
        return None
    return tuple(base) + tuple(rest)


def resolve(modules, path, depth=0):
    """The module that defines what an absolute path names."""
    mod = ()
    i = 0
    while i < len(path) and mod + (path[i],) in modules:
        mod = mod + (path[i],)
        i += 1
    if i < len(path) and depth < 16:
        name = path[i]
        m = modules[mod]
        if name not in m.items:
            if name in m.reexports:
                return resolve(modules, m.reexports[name] + tuple(path[i + 1:]), depth + 1)
            for g in m.globs:
                target = resolve(modules, g + (name,), depth + 1)
                if target != g or name in modules.get(g, m).items:
                    return target
    return mod


def edges_of(modules):
    # re-exports first: they are followed when resolving
    uses = {}
    for path, mod in modules.items():
        uses[path] = []
        for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", mod.code):
            for item in expand_use(m.group(2)):
                parts = [p for p in item.replace(" ", "").split("::") if p]
                if parts and parts[0] == "":
                    continue
                target = absolute(modules, path, parts)
                if target is None:
                    continue
                if m.group(1):
                    if parts[-1] == "*":
                        mod.globs.append(target[:-1])
                    else:
                        mod.reexports[parts[-1]] = target
                else:
                    uses[path].append(target)
    edges = {p: set() for p in modules}
    for path, mod in modules.items():
        targets = list(uses[path])
        # inline paths outside `use` items
        code = re.sub(r"\buse\s+[^;]+;", "", mod.code)
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + ")", code):
            parts = m.group(1).split("::")
            target = absolute(modules, path, parts)
            if target is not None:
                targets.append(target)
        for t in targets:
            if t and t[-1] == "*":
                t = t[:-1]
            dep = resolve(modules, t)
            if dep != path:
                edges[path].add(dep)
    return edges


def cycles(edges):
    """One cycle through each strongly connected set of two or more modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    result = []
    for comp in out:
        members = set(comp)
        start = comp[0]
        # shortest way back to start inside the component (breadth first)
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        chain = [found]
        while prev[chain[-1]] is not None:
            chain.append(prev[chain[-1]])
        chain.reverse()
        result.append((comp, chain + [start]))
    return result


def name(path):
    return "::".join(path) if path else "(root)"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    crates_dir = os.path.join(root, "crates")
    only = sys.argv[2:]
    found = 0
    for crate in only or sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        roots = [os.path.join(src, f) for f in ("lib.rs", "main.rs") if os.path.isfile(os.path.join(src, f))]
        bin_dir = os.path.join(src, "bin")
        if os.path.isdir(bin_dir):
            roots += sorted(os.path.join(bin_dir, f) for f in os.listdir(bin_dir) if f.endswith(".rs"))
        for root_file in roots:
            modules = load_tree(root_file)
            label = crate if root_file.endswith("lib.rs") else f"{crate} ({os.path.relpath(root_file, src)})"
            for comp, chain in cycles(edges_of(modules)):
                found += 1
                print(f"{label}: {' -> '.join(name(p) for p in chain)}"
                      + (f"  (cycle set: {', '.join(name(p) for p in comp)})" if len(comp) > len(chain) - 1 else ""))
    if found:
        print(f"{found} module cycle(s)", file=sys.stderr)
        return 1
    print("no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
