"""docs/FEATURES.md names, for each feature, the test that proves it: each name must be real.

The references are checked by reading the test files with ast, not by running them: a file that
is missing, or a name that no function in it has, fails here and is named.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
FEATURES = PROJECT_DIR / "docs" / "FEATURES.md"
# `tests/test_x.py::test_name`: a file under tests/ and a function name, without [param].
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
LEAST_FEATURES = 60


def feature_lines(text: str) -> list[str]:
    """The list items of the document: one feature each."""
    return [line for line in text.splitlines() if line.startswith("- ")]


@cache
def defined_tests(path: str) -> frozenset[str] | None:
    """Names of the test functions (methods of classes too) in a project file; None if absent."""
    source = PROJECT_DIR / path
    if not source.is_file():
        return None
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=path)
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def unresolved(references: list[tuple[str, str]]) -> list[str]:
    """Each reference whose file does not exist or has no such test, with what is wrong."""
    problems = []
    for path, name in references:
        found = defined_tests(path)
        if found is None:
            problems.append(f"{path}::{name} (no file {path})")
        elif name not in found:
            problems.append(f"{path}::{name} (no def {name} in {path})")
    return problems


def test_every_test_that_features_md_names_exists() -> None:
    references = REFERENCE.findall(FEATURES.read_text(encoding="utf-8"))
    assert references, "docs/FEATURES.md names no test"
    problems = unresolved(references)
    assert not problems, "docs/FEATURES.md names tests that do not exist:\n" + "\n".join(problems)


def test_every_feature_names_its_test_and_there_are_enough() -> None:
    features = feature_lines(FEATURES.read_text(encoding="utf-8"))
    without = [line for line in features if not REFERENCE.search(line)]
    assert not without, "features without a `tests/file.py::test_name`:\n" + "\n".join(without)
    assert len(features) >= LEAST_FEATURES, f"only {len(features)} features listed"


def test_the_check_finds_a_missing_file_and_a_missing_test() -> None:
    """The checker itself: a real reference passes, a made-up file or name is reported."""
    real = ("tests/test_features.py", "test_every_test_that_features_md_names_exists")
    assert not unresolved([real])
    assert unresolved(
        [("tests/test_nowhere.py", "test_x"), ("tests/test_features.py", "test_x")]
    ) == [
        "tests/test_nowhere.py::test_x (no file tests/test_nowhere.py)",
        "tests/test_features.py::test_x (no def test_x in tests/test_features.py)",
    ]
    line = "- a feature — `tests/test_shop.py::test_buying_needs_a_login`"
    assert REFERENCE.findall(line) == [("tests/test_shop.py", "test_buying_needs_a_login")]
    assert not REFERENCE.search("- a feature — `tests/test_shop.py::test_limits[order]`")
