#!/usr/bin/env python3
"""Regenerate the values table of helm/aegis/README.md from the `# --` comments of
helm/aegis/values.yaml (the helm-docs convention), between the VALUES markers.

Usage: scripts/helm-values-table.py            (rewrites the README in place)
       scripts/helm-values-table.py --check    (exit 1 if the README is out of date)
The chart test (tests/tests/chart.rs) also checks that every value has a row.
"""
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALUES = ROOT / "helm/aegis/values.yaml"
README = ROOT / "helm/aegis/README.md"
BEGIN, END = "<!-- VALUES:BEGIN -->", "<!-- VALUES:END -->"


def documented(text):
    """(path, description) for each key preceded by a `# --` comment block."""
    stack, out, doc = [], [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            doc = None
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("--"):
                doc = body[2:].strip()
            elif doc is not None:
                doc += " " + body
            continue
        if stripped.startswith("-") or ":" not in stripped:
            doc = None
            continue
        key = stripped.split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [key])
        if doc is not None and not any(path.startswith(p + ".") for p, _ in out):
            out.append((path, doc))
        stack.append((indent, key))
        doc = None
    return out


def lookup(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def main():
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for path, doc in documented(text):
        default = json.dumps(lookup(values, path), separators=(",", ":"))
        desc = doc.replace("|", "\\|")
        rows.append(f"| `{path}` | `{default}` | {desc} |")
    table = "\n".join(rows)
    readme = README.read_text()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table}\n{END}{tail}"
    if "--check" in sys.argv:
        if new != readme:
            print("helm/aegis/README.md is out of date: run scripts/helm-values-table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
