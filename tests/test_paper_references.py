"""A newcomer finds every equation the product implements by searching the
docstrings for its name: DDPM eq. 4-15, Algorithms 1-4, VDM eq. 17 and the
VDM appendix A (../shared/papers)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def docstrings() -> str:
    out = []
    for top in ("ddpm_codec", "bitsback"):
        for path in (ROOT / top).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        out.append(doc)
    return "\n".join(out)


def numbers(text: str, word: str) -> set[int]:
    """Every number a docstring names after `word`, ranges ("eq. 6-7") expanded."""
    found = set()
    for a, b in re.findall(rf"{word}\s*(\d+)(?:\s*-\s*(\d+))?", text):
        found |= set(range(int(a), int(b or a) + 1))
    return found


def test_every_ddpm_equation_and_algorithm_is_named_in_a_docstring():
    text = docstrings()
    assert set(range(4, 16)) <= numbers(text, r"eq\."), sorted(set(range(4, 16)) - numbers(text, r"eq\."))
    assert {1, 2, 3, 4} <= numbers(text, r"Algorithms?"), sorted({1, 2, 3, 4} - numbers(text, r"Algorithms?"))


def test_vdm_references_are_named_in_a_docstring():
    text = docstrings()
    assert re.search(r"VDM eq\. 17", text)
    assert re.search(r"VDM appendix A", text)


def test_the_search_is_not_vacuous():
    assert numbers("see DDPM eq. 6-7 and Algorithms 3-4", r"eq\.") == {6, 7}
    assert numbers("see DDPM eq. 6-7 and Algorithms 3-4", r"Algorithms?") == {3, 4}
