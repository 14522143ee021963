#!/usr/bin/env python3
"""List Rust functions longer than a limit (default 120 lines, signature to closing
brace) in the workspace's library, binary, bench-harness and example code: the
crates' `src/` and `examples/`, `benches/src/` and `examples/`. Test code is left out:
files named `tests.rs` or under a `tests/` folder, and `#[cfg(test)]` modules.

Usage: scripts/long-functions.py [LIMIT]   (exit status 1 when any is found)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 120
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def code_only(text):
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:i + 12]):
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(path):
    lines = code_only(path.read_text()).split("\n")
    found, depth, stack, skip_depth, pending_test = [], 0, [], None, False
    for no, line in enumerate(lines, 1):
        if skip_depth is None and re.search(r"#\[cfg\(test\)\]", line):
            pending_test = True
        m = FN.match(line)
        if m and skip_depth is None:
            stack.append((m.group(7), no, depth))
        for ch in line:
            if ch == "{":
                if pending_test and skip_depth is None:
                    skip_depth, pending_test = depth, False
                depth += 1
            elif ch == "}":
                depth -= 1
                if skip_depth is not None and depth == skip_depth:
                    skip_depth = None
                while stack and stack[-1][2] == depth and depth >= 0:
                    name, start, _ = stack.pop()
                    if no - start + 1 > LIMIT:
                        found.append((no - start + 1, name, start))
                    break
            elif ch == ";" and stack and stack[-1][2] == depth:
                stack.pop()  # a declaration without a body (a trait's required method)
        if pending_test and ";" in line and "{" not in line and not line.strip().startswith("#"):
            pending_test = False  # `#[cfg(test)] mod tests;` or a single item
    return found


def main():
    files = []
    for pattern in ("crates/*/src/**/*.rs", "crates/*/examples/**/*.rs", "benches/src/**/*.rs", "examples/**/*.rs"):
        files += ROOT.glob(pattern)
    rows = []
    for f in sorted(set(files)):
        rel = f.relative_to(ROOT)
        if f.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        for length, name, start in long_functions(f):
            rows.append((length, f"{rel}:{start}", name))
    for length, where, name in sorted(rows, reverse=True):
        print(f"{length:5} {where} {name}")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
