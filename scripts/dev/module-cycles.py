#!/usr/bin/env python3
"""Import cycles between sslpipe's modules (one module per file), and lines per module folder.

    python3 scripts/dev/module-cycles.py [SRC_DIR]

A module depends on another when it names it: `use crate::a::b`, `use super::x`, a
`crate::a::b::f()` path in code, or a child module it declares. Test files and `#[cfg(test)]`
modules are left out (tests may reach anywhere). Prints every strongly connected group of more
than one module (a cycle) and the non-test lines of each module folder; exits 1 if there is a
cycle. Declaring a child (`mod x;`) is not counted as a dependency on it, so a parent that only
declares and re-exports its children does not make a cycle with them.
"""
import os, re, sys
from collections import defaultdict

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "src")
src = os.path.normpath(src)

def module_of(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel == ["main"]:
        return ("main",)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)

files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[module_of(p)] = p
modules = set(files)

def is_test(mod):
    return any(part in ("tests", "test_support") or part.endswith("_tests") for part in mod)

def strip_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)

def expand(prefix, body):
    """`a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e]."""
    body = body.strip()
    if not body.startswith("{"):
        return [prefix + body]
    inner, depth, part, parts = body[1:-1], 0, "", []
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(part); part = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        part += ch
    parts.append(part)
    res = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        m = re.match(r"([\w:]*?)(\{.*\})$", p, re.S)
        res += expand(prefix + m.group(1), m.group(2)) if m else [prefix + p]
    return res

def resolve(mod, path):
    parts = [p for p in re.split(r"::", path.split(" as ")[0].strip()) if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        base = mod
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    else:
        return None
    best = None
    for k in range(len(rest) + 1):
        cand = base + tuple(rest[:k])
        if cand in modules:
            best = cand
    return best

deps = defaultdict(set)
lines = defaultdict(int)
for mod, path in files.items():
    if is_test(mod):
        continue
    text = strip_tests(open(path).read())
    lines[mod] = sum(1 for l in text.splitlines() if l.strip())
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text, re.S):
        u = re.sub(r"\s+", "", m.group(1))
        m2 = re.match(r"([\w:]*?)(\{.*\})$", u)
        paths += expand(m2.group(1), m2.group(2)) if m2 else [u]
    paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    for p in paths:
        target = resolve(mod, p)
        if target is None or target == mod or is_test(target):
            continue
        if target[: len(mod)] == mod:   # a child of this module: declaring it is not using it
            continue
        deps[mod].add(target)

def cycles(graph, nodes):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found

live = [m for m in modules if not is_test(m)]
sccs = cycles(deps, live)
# The same at the level of the crate's top-level modules (config, pipeline, train, ...).
top = defaultdict(set)
for a, targets in deps.items():
    for b in targets:
        if a[:1] != b[:1] and a and b:
            top[a[:1]].add(b[:1])
sccs += cycles(top, {m[:1] for m in live if m})

name = lambda m: "::".join(m) or "crate"
print(f"{len(sccs)} import cycle(s)")
for comp in sccs:
    print("  cycle: " + " <-> ".join(name(m) for m in comp))
folders = defaultdict(int)
for mod, n in lines.items():
    folders[mod[0] if len(mod) > 1 or (mod and files[mod].endswith("mod.rs")) else (mod[0] if mod else "lib")] += n
print("non-test, non-blank lines per top-level module:")
for k in sorted(folders):
    print(f"  {k:10} {folders[k]:6}")
big = sorted(((n, name(m)) for m, n in lines.items() if n > 800), reverse=True)
for n, m in big:
    print(f"  over 800 lines: {m} ({n})")
sys.exit(1 if sccs else 0)
