"""The source tree's layout limits, read from the source with ``ast``.

- no module in ``src/shardq`` over 700 lines;
- no class body over 600 lines;
- no private name (a leading underscore, not a dunder) taken from another module, by
  ``from m import _name`` or by ``m._name`` on an imported module. Private *modules* are
  fine to import (the package ``shardq._internal`` holds the code shared inside shardq):
  the limit is about names a module keeps to itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "shardq"

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 600

#: Violations the tree still has, as "path:name" (the module's path from the repository
#: root, and "<module>", the class or the private name). Each is in code being reworked;
#: the list may only shrink: an entry that no longer occurs fails the test until removed.
KNOWN: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Violation:
    """One place over a limit (``kind``: module, class or private), and what to do about it."""

    kind: str
    path: str
    line: int
    name: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.path}:{self.name}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Module:
    """One source file of a package rooted at ``package`` (its directory)."""

    def __init__(self, path: Path, package: Path) -> None:
        self.path = path
        self.src = package.parent
        self.rel = path.relative_to(package.parent.parent).as_posix()
        self.text = path.read_text(encoding="utf-8")
        self.tree = ast.parse(self.text, filename=str(path))
        parts = list(path.relative_to(self.src).with_suffix("").parts)
        # The package a relative import starts from (for an __init__, its own package).
        self.package_parts = parts[:-1]

    def target(self, node: ast.ImportFrom) -> list[str]:
        """The dotted module an ``import from`` reads, as parts (absolute)."""
        module = node.module.split(".") if node.module else []
        if node.level == 0:
            return module
        base = self.package_parts[: len(self.package_parts) - (node.level - 1)]
        return base + module

    def is_module(self, parts: list[str]) -> bool:
        """Whether ``parts`` names a module or package of this source tree."""
        where = self.src.joinpath(*parts)
        return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _module_size(m: _Module) -> list[Violation]:
    lines = len(m.text.splitlines())
    if lines <= MAX_MODULE_LINES:
        return []
    return [
        Violation(
            "module",
            m.rel,
            1,
            "<module>",
            f"module is {lines} lines (limit {MAX_MODULE_LINES}): split it by concept into"
            " modules of a package, one concept per module",
        )
    ]


def _class_sizes(m: _Module) -> list[Violation]:
    out = []
    for node in ast.walk(m.tree):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_CLASS_LINES:
                out.append(
                    Violation(
                        "class",
                        m.rel,
                        node.lineno,
                        node.name,
                        f"class {node.name} is {lines} lines (limit {MAX_CLASS_LINES}): move"
                        " one of its concerns into a collaborator of its own",
                    )
                )
    return out


def _private_name(m: _Module, line: int, name: str, source: str, own: bool) -> Violation:
    advice = (
        "make it public in its module (drop the underscore and document it), or move the"
        " shared code to shardq._internal"
        if own
        else "use the library's public API instead"
    )
    return Violation(
        "private", m.rel, line, name, f"takes the private name {name} from {source}: {advice}"
    )


def _module_aliases(m: _Module) -> dict[str, str]:
    """Local names bound to modules by this file's imports, each with the module's name."""
    aliases = {}
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    head = a.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom):
            target = m.target(node)
            for a in node.names:
                if m.is_module([*target, a.name]):
                    aliases[a.asname or a.name] = ".".join([*target, a.name])
    return aliases


def _private_imports(m: _Module) -> list[Violation]:
    out = []
    for node in ast.walk(m.tree):
        if isinstance(node, ast.ImportFrom):
            target = m.target(node)
            source = "." * node.level + (node.module or "")
            for a in node.names:
                if _is_private(a.name) and not m.is_module([*target, a.name]):
                    own = m.is_module(target)
                    out.append(_private_name(m, node.lineno, a.name, source, own))
    aliases = _module_aliases(m)
    for node in ast.walk(m.tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        base: ast.expr = node.value
        while isinstance(base, ast.Attribute) and not _is_private(base.attr):
            base = base.value
        if isinstance(base, ast.Name) and base.id in aliases:
            own = m.is_module(aliases[base.id].split("."))
            source = ast.unparse(node.value)
            out.append(_private_name(m, node.lineno, node.attr, source, own))
    return out


def scan(package: Path) -> list[Violation]:
    """Every violation of the layout limits in the package rooted at ``package``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        m = _Module(path, package)
        out += _module_size(m) + _class_sizes(m) + _private_imports(m)
    return out


def _unexpected(kind: str) -> list[str]:
    return [str(v) for v in scan(PACKAGE) if v.kind == kind and v.key not in KNOWN]


def test_no_module_is_over_700_lines() -> None:
    found = _unexpected("module")
    assert not found, "\n".join(found)


def test_no_class_is_over_600_lines() -> None:
    found = _unexpected("class")
    assert not found, "\n".join(found)


def test_no_module_takes_a_private_name_from_another() -> None:
    found = _unexpected("private")
    assert not found, "\n".join(found)


def test_every_known_violation_still_occurs_so_the_list_only_shrinks() -> None:
    found = {v.key for v in scan(PACKAGE)}
    gone = sorted(KNOWN - found)
    assert gone == [], f"fixed, remove from KNOWN in {Path(__file__).name}: {gone}"


# The checks themselves, on a small package written for the purpose.


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "src" / "pkg"
    (pkg / "_internal").mkdir(parents=True)
    (pkg / "sub").mkdir()
    files = {
        "__init__.py": "",
        "_internal/__init__.py": "",
        "_internal/shared.py": "def helper() -> None: ...\n",
        "sub/__init__.py": "",
        "sub/_hidden.py": "VALUE = 1\n",
        "other.py": "class _Secret: ...\nclass Open: ...\n__version__ = '1'\n",
        "fine.py": (
            "from . import _internal\n"
            "from ._internal import shared\n"
            "from ._internal.shared import helper\n"
            "from .sub import _hidden\n"
            "from .other import Open, __version__\n"
            "import pkg.other\n"
            "x = Open()._private\n"
        ),
        "sub/bad.py": (
            "from ..other import _Secret\n"
            "from .. import other\n"
            "import pkg.other as o\n"
            "a = other._Secret\n"
            "b = o._Secret\n"
            "import argparse\n"
            "c = argparse._SubParsersAction\n"
        ),
        "long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
        "big.py": "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES + "class Small:\n    x = 1\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg


def test_the_checks_refuse_each_kind_of_violation_and_only_those(package: Path) -> None:
    found = sorted((v.path, v.line, v.name) for v in scan(package))
    assert found == [
        ("src/pkg/big.py", 1, "Big"),
        ("src/pkg/long.py", 1, "<module>"),
        ("src/pkg/sub/bad.py", 1, "_Secret"),
        ("src/pkg/sub/bad.py", 4, "_Secret"),
        ("src/pkg/sub/bad.py", 5, "_Secret"),
        ("src/pkg/sub/bad.py", 7, "_SubParsersAction"),
    ]


def test_a_message_names_the_place_and_what_to_do(package: Path) -> None:
    messages = {str(v) for v in scan(package)}
    assert (
        "src/pkg/sub/bad.py:1: takes the private name _Secret from ..other: make it public"
        " in its module (drop the underscore and document it), or move the shared code to"
        " shardq._internal"
    ) in messages
    assert (
        "src/pkg/sub/bad.py:7: takes the private name _SubParsersAction from argparse: use the"
        " library's public API instead"
    ) in messages
    assert any(m.startswith("src/pkg/big.py:1: class Big is 601 lines") for m in messages)
    assert any(m.startswith("src/pkg/long.py:1: module is 701 lines") for m in messages)
