"""The direction of imports (DESIGN.md "Layers"): each folder is one layer and
may import only the layers below it.  Read from the source with ast, function-
level imports included, so a lazy import cannot hide a wrong-way dependency."""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# layer -> the layers it may import (besides itself); the third-party world is free
# except torch where a layer must stay torch-free.
ALLOWED = {
    "bitsback.errors": set(),
    "bitsback.exact": set(),
    "bitsback.ans": {"bitsback.errors"},
    "bitsback.symbols": {"bitsback.errors", "bitsback.exact"},
    "bitsback.rcc": {"bitsback.errors", "bitsback.varint"},
    "bitsback.varint": set(),
    "bitsback.chains": {"bitsback.errors", "bitsback.ans", "bitsback.symbols"},
    "bitsback": {"bitsback.errors", "bitsback.ans", "bitsback.symbols", "bitsback.chains", "bitsback.rcc",
                 "bitsback.varint", "bitsback.exact"},
    "ddpm_codec.errors": {"bitsback.errors"},
    "ddpm_codec.format": {"ddpm_codec.errors", "bitsback.varint"},
    "ddpm_codec.diffusion": {"ddpm_codec.errors", "bitsback.exact"},
    "ddpm_codec.io": {"ddpm_codec.errors", "ddpm_codec.diffusion"},
    "ddpm_codec.data": {"ddpm_codec.errors", "ddpm_codec.io"},
    "ddpm_codec.bound": {"ddpm_codec.errors", "ddpm_codec.diffusion"},
    "ddpm_codec.testing": {"ddpm_codec.errors", "ddpm_codec.diffusion", "ddpm_codec.bound", "ddpm_codec.io",
                           "ddpm_codec.format", "ddpm_codec.codec", "ddpm_codec.training", "ddpm_codec.api", "bitsback"},
    "ddpm_codec.codec": {"ddpm_codec.errors", "ddpm_codec.format", "ddpm_codec.diffusion", "ddpm_codec.bound", "ddpm_codec.io",
                         "bitsback"},
    "ddpm_codec.training": {"ddpm_codec.errors", "ddpm_codec.diffusion", "ddpm_codec.bound", "ddpm_codec.data",
                            "ddpm_codec.io"},
    "ddpm_codec.api": {"ddpm_codec.errors", "ddpm_codec.format", "ddpm_codec.io", "ddpm_codec.codec"},
    "ddpm_codec.eval": {"ddpm_codec.errors", "ddpm_codec.format", "ddpm_codec.diffusion", "ddpm_codec.io",
                        "ddpm_codec.bound", "ddpm_codec.codec", "ddpm_codec.api", "bitsback"},
}
TORCH_FREE = ("bitsback", "ddpm_codec.format", "ddpm_codec.errors", "ddpm_codec.io.images")
OWN = ("ddpm_codec", "bitsback")


def layer_of(module: str) -> str:
    """The layer a dotted module belongs to: its package's first sub-level."""
    parts = module.split(".")
    if parts[0] == "bitsback":
        return "bitsback" if len(parts) == 1 or parts[1] == "__init__" else ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            if mod in OWN:        # "from ddpm_codec import eval" names a subpackage
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for top in OWN:
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            mine = layer_of(module)
            for line, dep in imports(path, module):
                where = f"{path.relative_to(root)}:{line}"
                if dep.split(".")[0] == "torch" and any(mine == t or mine.startswith(t + ".") for t in TORCH_FREE):
                    found.append(f"{where}: {mine} must not import torch")
                if dep.split(".")[0] not in OWN or dep in OWN:
                    continue
                theirs = layer_of(dep)
                if theirs == mine:
                    continue
                if not any(theirs == a or theirs.startswith(a + ".") for a in ALLOWED.get(mine, set())):
                    found.append(f"{where}: {mine} imports {dep} ({theirs} is not below it)")
    for top in ("tests", "cli"):
        for path in sorted((root / top).rglob("*.py")):
            text = path.read_text()
            for line, dep in imports(path, module_name(path, root)):
                if dep.split(".")[0] in {p.stem for p in (root / "benchmarks").glob("*.py")} | {"benchmarks"}:
                    found.append(f"{path.relative_to(root)}:{line}: {top} imports the benchmark {dep}")
            if top == "tests" and re.search(r"(sys\.path\.insert|syspath_prepend)\(.*benchmarks", text):
                found.append(f"{path.relative_to(root)}: tests put benchmarks/ on sys.path")
    return found


def test_every_module_belongs_to_a_known_layer():
    for top in OWN:
        for path in (ROOT / top).rglob("*.py"):
            module = module_name(path, ROOT)
            if module in OWN:
                continue
            assert layer_of(module) in ALLOWED, f"{module}: no layer rule (add it to ALLOWED)"


def test_imports_point_down_the_layers():
    assert violations() == []


def test_a_wrong_way_import_is_caught(tmp_path):
    """The check is not vacuous: a copy of the tree with one codec -> eval import,
    one torch import in the format layer and one benchmark import in a test fails it."""
    for top in (*OWN, "tests", "cli", "benchmarks"):
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("weights", "golden", "__pycache__"))
    with open(tmp_path / "ddpm_codec/codec/units.py", "a") as f:
        f.write("\n\ndef _late():\n    from ddpm_codec.eval import bench  # noqa\n")
    with open(tmp_path / "ddpm_codec/format/varint.py", "a") as f:
        f.write("\nimport torch  # noqa\n")
    with open(tmp_path / "tests/test_layers.py", "a") as f:
        f.write("\nimport fuzz_streams  # noqa\n")
    found = violations(tmp_path)
    assert any("ddpm_codec/codec/units.py" in v and "ddpm_codec.eval" in v for v in found), found
    assert any("ddpm_codec/format/varint.py" in v and "torch" in v for v in found), found
    assert any("tests/test_layers.py" in v and "fuzz_streams" in v for v in found), found
    assert len(found) == 3, found
