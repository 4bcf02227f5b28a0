"""The house's rules, checked: layers only import downward, docs/architecture.md names every
module (and only modules that exist), and a module over ~350 lines says at its top why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mmhost"
DOC = (ROOT / "docs" / "architecture.md").read_text()
# the layer order, bottom up, written once (docs/architecture.md shows the same table)
LAYERS = [
    {"errors", "settings", "logs", "types", "metrics"},
    {"security"},
    {"store"},
    {"artifacts"},
    {"kernels"},
    {"codecs"},
    {"families"},
    {"cache"},
    {"engine"},
    {"host"},
    {"api"},
    {"convert", "train", "fleet"},
    {"cli", "tools", "__main__", "__init__"},
]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
MAX_LINES = 350


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _room(module: str) -> str:
    """mmhost.cache.tiers -> cache; mmhost.host -> host; mmhost -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mmhost":
                out += [(node.lineno, f"mmhost.{a.name}") for a in node.names]
            elif node.module.startswith("mmhost."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mmhost.")]
    return out


def test_every_room_has_a_layer():
    rooms = {_room(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in _modules()}
    assert rooms <= set(LAYER), rooms - set(LAYER)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in _modules():
        here = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, target in _imports(path):
            there = _room(target)
            if there in LAYER and LAYER[there] > LAYER[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target}")
    assert not upward, "\n".join(upward)


def test_the_architecture_page_names_every_module_and_only_real_ones():
    named = set(re.findall(r"`(mmhost/[\w/]+\.py)`", DOC))
    real = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert not named - real, f"named but gone: {sorted(named - real)}"
    assert not real - named, f"not described: {sorted(real - named)}"
    for rooms in LAYERS:  # the page's layer table is the one above
        assert all(f"`{room}`" in DOC for room in rooms), rooms


def test_a_long_module_says_why_at_its_top():
    unexplained = []
    for path in _modules():
        text = path.read_text()
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Size:" not in doc:
                unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, unexplained
