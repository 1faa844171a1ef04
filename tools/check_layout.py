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
CLAP_ALLOWED = {"src/main.rs", "src/cli.rs"}
# The binary crate (main.rs and the modules it declares); the rest is the library.
BINARY = {"src/main.rs", "src/cli.rs", "src/app.rs"}
STRING = re.compile(r'"(\\.|[^"\\])*"')
CHAR = re.compile(r"'(\\.|[^'\\])'")
FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?(async\s+)?fn\s+(\w+)")


def item_end(lines, start):
    """The last line of the item starting at `start`: where its braces close, or its `;`."""
    depth, started, j = 0, False, start
    while j < len(lines):
        depth += lines[j].count("{") - lines[j].count("}")
        started = started or "{" in lines[j]
        if (started and depth <= 0) or (not started and lines[j].rstrip().endswith(";")):
            return j
        j += 1
    return len(lines) - 1


def strip_literals(line):
    return CHAR.sub("' '", STRING.sub('""', line)).split("//")[0]


def code_of(text):
    """The lines without comments, string and char literals, and test code: a `#[cfg(test)]`
    item (a `mod tests { … }` block, brace-matched, or a one-line `mod …;` / `use …;`) becomes
    empty lines, so line numbers stay true."""
    lines = [strip_literals(line) for line in text.splitlines()]
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "#[cfg(test)]":
            out.append(lines[i])
            i += 1
            continue
        j = item_end(lines, i + 1)
        out += [""] * (j + 1 - i)
        i = j + 1
    return out


def is_test_file(path):
    return path.name == "tests.rs" or path.name.endswith("_tests.rs")


def long_functions(path, lines):
    found = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        j = item_end(lines, i)
        if j - i + 1 > MAX_FN_LINES:
            found.append(f"{path}:{i + 1}: fn {m.group(6)} has {j - i + 1} lines (> {MAX_FN_LINES})")
    return found


def module_of(src, path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts)


def reexports(module, lines, modules):
    """Item name -> the child module a `pub use child::…` in this module re-exports it from."""
    out = {}
    text = "\n".join(lines)
    for path, group in re.findall(r"pub use\s+([\w:]+?)(?:::\{([^;]*?)\})?\s*;", text, re.S):
        parts = path.split("::")
        items = [i.strip().split(" as ")[-1] for i in group.split(",")] if group else [parts.pop()]
        target = tuple(list(module) + parts)
        if parts and target in modules:
            out.update({item: target for item in items if item})
    return out


def resolve(module, path, modules, exported):
    """The file a `crate::`/`super::`/`self::` path refers to, following re-exports."""
    parts = path.split("::")
    if parts[0] == "crate":
        cur, parts = (), parts[1:]
    elif parts[0] == "self":
        cur, parts = module, parts[1:]
    else:
        cur, parts = module[:-1], parts[1:]
        while parts and parts[0] == "super":
            cur, parts = cur[:-1], parts[1:]
    if cur not in modules:
        return None
    for part in parts:
        if cur + (part,) in modules:
            cur = cur + (part,)
        else:
            return exported.get(cur, {}).get(part, cur)
    return cur


def references(module, lines, modules, exported):
    """The modules (files) this module refers to, its own ancestors excepted."""
    text = "\n".join(lines)
    paths = re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text)
    for base, group in re.findall(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^;]*?)\}", text, re.S):
        paths += [f"{base}::{item.strip()}" for item in re.split(r"[,{}\s]+", group)
                  if item.strip() and item.strip() != "self"]
    # `use child::x` inside a module: its own children, without a prefix.
    paths += [f"self::{c}" for c in re.findall(r"^\s*(?:pub\s+)?use\s+(\w+)::", text, re.M)]
    out = set()
    for p in paths:
        target = resolve(module, p, modules, exported)
        if target is not None and target != module and module[: len(target)] != target:
            out.add(target)
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
    library = [f for f in files if str(f.relative_to(repo)) not in BINARY]
    modules = {module_of(src, f): f for f in library}
    code = {f: code_of(f.read_text()) for f in files}
    exported = {module_of(src, f): reexports(module_of(src, f), code[f], modules) for f in library}
    edges = collections.defaultdict(set)
    for f in files:
        rel = f.relative_to(repo)
        text = f.read_text()
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            problems.append(f"{rel}: {n} lines (> {MAX_FILE_LINES}); split it by concern")
        lines = code[f]
        if not is_test_file(f):
            problems += long_functions(rel, lines)
        if str(rel) not in CLAP_ALLOWED and re.search(r"\bclap\b", "\n".join(lines)):
            problems.append(f"{rel}: uses clap; only src/main.rs and src/cli.rs may")
        if f in library and not is_test_file(f):
            module = module_of(src, f)
            edges[module] |= references(module, lines, modules, exported)
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
