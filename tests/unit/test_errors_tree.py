"""The class tree drawn in bridge/errors.py's docstring is the real one: every class, each under its base."""

from __future__ import annotations

import inspect
import re

from bridge import errors

ROOT = re.compile(r"^([A-Z]\w*)$")
BRANCH = re.compile(r"^((?:│   |    )*)(?:├── |└── )([A-Z]\w*)(?:\s|$)")


def drawn_tree(text: str) -> dict[str, str]:
    """Each drawn class name mapped to the name drawn as its parent (roots such as Exception map to '')."""
    parents: dict[str, str] = {}
    path: list[str] = []
    for line in text.splitlines():
        if root := ROOT.match(line):
            path = [root.group(1)]
            parents[root.group(1)] = ""
        elif branch := BRANCH.match(line):
            depth = len(branch.group(1)) // 4 + 1
            assert 0 < depth <= len(path), f"a branch without a parent: {line!r}"
            path = [*path[:depth], branch.group(2)]
            parents[branch.group(2)] = path[depth - 1]
    return parents


def real_tree() -> dict[str, str]:
    """Each class defined in bridge/errors.py mapped to the name of its one base class."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    tree = {}
    for cls in classes:
        assert len(cls.__bases__) == 1, f"{cls.__name__} has several bases; draw them"
        tree[cls.__name__] = cls.__bases__[0].__name__
    return tree


def test_the_drawn_tree_matches_the_classes_and_their_bases() -> None:
    """Every class in errors.py is drawn, under its real base, and nothing drawn is missing from the code."""
    drawn = {name: parent for name, parent in drawn_tree(errors.__doc__ or "").items() if parent}
    assert drawn == real_tree()


def test_the_parser_reads_nesting_and_roots() -> None:
    """The parser itself: depth comes from the drawn prefix, and a new root starts a new tree."""
    text = "Exception\n└── A   says a\n    ├── B\n    │   └── C  deep\n    └── D\nStrEnum\n└── E\n"
    assert drawn_tree(text) == {
        "Exception": "",
        "A": "Exception",
        "B": "A",
        "C": "B",
        "D": "A",
        "StrEnum": "",
        "E": "StrEnum",
    }
