"""The docs name code that exists: every `pipeline/...py: name` in README.md and docs/ is defined there.

docs/method.md promises that any quantity's code is found from its name; a function renamed or
moved without its docs fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `pipeline/measures/hip.py: measure_hip` or `pipeline/io/scan.py` (names after the colon, comma-separated)
REFERENCE = re.compile(r"(pipeline/[\w/]+\.py)(?::\s*([\w.]+(?:\s*,\s*[\w.]+)*))?")


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(f"{node.name}.{item.name}" for item in node.body
                             if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _references():
    for doc in DOCS:
        for match in REFERENCE.finditer(doc.read_text()):
            names = [n.strip() for n in (match.group(2) or "").split(",") if n.strip()]
            yield doc.name, match.group(1), names


@pytest.mark.parametrize("doc, module, names", list(_references()), ids=lambda v: str(v)[:60])
def test_documented_code_exists(doc, module, names):
    path = ROOT / module
    assert path.is_file(), f"{doc} names {module}, which does not exist"
    missing = [n for n in names if n not in _defined(path)]
    assert not missing, f"{doc} names {missing} in {module}, not defined there"
