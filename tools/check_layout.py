#!/usr/bin/env python3
"""The source tree's layout rules (docs/architecture.md), checked on every `tools/dev test`:

- no file in src/ over 600 lines;
- no function over 120 lines, tests aside (a file's `#[cfg(test)]` module and `tests.rs` /
  `*_tests.rs` files are not counted);
- `clap` named only in src/main.rs and src/cli.rs (the library does not depend on the CLI);
- no import cycle between the files of src/ (references through `crate::`, `super::`, `self::`;
  a module's references to its own parents do not count).

Prints what breaks a rule and exits 1, else prints a one-line summary. Reads the source as text:
comments and string literals are dropped before references are looked for.

    python3 tools/check_layout.py [REPO]
"""

import collections
import pathlib
import re
import sys

MAX_FILE_LINES = 600
MAX_FN_LINES = 120
CLAP_ALLOWED = {"main.rs", "cli.rs"}
STRING = re.compile(r'"(\\.|[^"\\])*"')
CHAR = re.compile(r"'(\\.|[^'\\])'")
FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?(async\s+)?fn\s+(\w+)")


def code_of(text):
    """The text without comments, string and char literals, and the trailing `#[cfg(test)]` module."""
    text = text.split("#[cfg(test)]")[0]
    return [CHAR.sub("' '", STRING.sub('""', line)).split("//")[0] for line in text.splitlines()]


def is_test_file(path):
    return path.name == "tests.rs" or path.name.endswith("_tests.rs")


def long_functions(path, lines):
    found = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            started = started or "{" in lines[j]
            if (started and depth <= 0) or (not started and lines[j].rstrip().endswith(";")):
                break
            j += 1
        if j - i + 1 > MAX_FN_LINES:
            found.append(f"{path}:{i + 1}: fn {m.group(6)} has {j - i + 1} lines (> {MAX_FN_LINES})")
    return found


def module_of(src, path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts)


def references(module, lines, modules):
    """The modules (files) this module refers to, its own ancestors excepted."""
    text = "\n".join(lines)
    paths = re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text)
    for base, group in re.findall(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^;]*?)\}", text, re.S):
        paths += [f"{base}::{item.strip()}" for item in re.split(r"[,{}\s]+", group)
                  if item.strip() and item.strip() != "self"]
    out = set()
    for p in paths:
        parts = p.split("::")
        if parts[0] == "crate":
            base, parts = [], parts[1:]
        elif parts[0] == "self":
            base, parts = list(module), parts[1:]
        else:
            base = list(module[:-1])
            parts = parts[1:]
            while parts and parts[0] == "super":
                base, parts = base[:-1], parts[1:]
        for k in range(len(parts), -1, -1):
            target = tuple(base + parts[:k])
            if target in modules:
                if target != module and module[: len(target)] != target:
                    out.add(target)
                break
    return out


def cycles(edges):
    state, found = {}, []

    def visit(u, stack):
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u, [])
    return found


def main():
    repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[1])
    src = repo / "src"
    files = sorted(src.rglob("*.rs"))
    problems = []
    modules = {module_of(src, f): f for f in files}
    edges = collections.defaultdict(set)
    for f in files:
        rel = f.relative_to(repo)
        text = f.read_text()
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            problems.append(f"{rel}: {n} lines (> {MAX_FILE_LINES}); split it by concern")
        lines = code_of(text)
        if not is_test_file(f):
            problems += long_functions(rel, lines)
        if f.name not in CLAP_ALLOWED and re.search(r"\bclap\b", "\n".join(lines)):
            problems.append(f"{rel}: uses clap; only src/main.rs and src/cli.rs may")
        if not is_test_file(f):
            edges[module_of(src, f)] |= references(module_of(src, f), lines, modules)
    for c in cycles(edges):
        problems.append("import cycle: " + " -> ".join("::".join(m) or "crate" for m in c))
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"layout ok: {len(files)} files, none over {MAX_FILE_LINES} lines, no function over "
          f"{MAX_FN_LINES} lines, clap only in main.rs/cli.rs, no import cycle")


if __name__ == "__main__":
    main()
