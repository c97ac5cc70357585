"""The documentation site: every nav page exists, the state diagram matches the state
machine, and every public name is documented by a ``:::`` block."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import dci6bridge
from dci6bridge.provisioning.states import TRANSITIONS, ServiceState

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _nav_pages() -> list[str]:
    """The pages of mkdocs.yml's ``nav`` (read with a regex: no YAML library needed)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.(?:md|ipynb))\s*$", nav, re.M)


def test_every_nav_page_exists() -> None:
    pages = _nav_pages()
    assert len(pages) >= 25
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert missing == []


def test_every_markdown_page_is_in_the_nav() -> None:
    pages = set(_nav_pages())
    orphans = sorted(
        str(p.relative_to(DOCS))
        for p in DOCS.rglob("*.md")
        if str(p.relative_to(DOCS)) not in pages
    )
    assert orphans == []


def _diagram_edges() -> set[tuple[str, str]]:
    text = (DOCS / "concepts.md").read_text()
    block = re.search(r"```mermaid\n(stateDiagram-v2.*?)```", text, re.S)
    assert block is not None, "concepts.md has no mermaid state diagram"
    edges = set()
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)", line)
        if m and "[*]" not in m.groups():
            edges.add((m.group(1), m.group(2)))
    return edges


def test_state_diagram_matches_the_transition_table() -> None:
    drawn = _diagram_edges()
    allowed = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    # the page explains these in words instead of drawing them
    in_words = {
        (a, b)
        for a, b in allowed
        if b in (ServiceState.TERMINATING.value, ServiceState.FAILED.value)
        or a == ServiceState.FAILED.value
    }
    assert drawn - allowed == set(), "the diagram draws transitions the code forbids"
    assert (allowed - in_words) - drawn == set(), "the diagram misses transitions"
    assert ("terminating", "closed") in drawn


def test_state_diagram_prose_matches_the_close_and_failure_edges() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    to_terminating = {a for a, b in allowed if b is ServiceState.TERMINATING}
    to_failed = {a for a, b in allowed if b is ServiceState.FAILED}
    every = set(ServiceState)
    assert to_terminating == every - {ServiceState.TERMINATING, ServiceState.CLOSED}
    assert to_failed == every - {ServiceState.CLOSED, ServiceState.FAILED}


def _documented_objects() -> dict[int, str]:
    """id(object) -> the ``:::`` path that renders it, for every block under reference/."""
    found: dict[int, str] = {}
    for page in (DOCS / "reference").rglob("*.md"):
        for path in re.findall(r"^::: ([\w.]+)", page.read_text(), re.M):
            module_name, _, attr = path.rpartition(".")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                obj = importlib.import_module(path)
            found[id(obj)] = path
    return found


PUBLIC = [name for name in dci6bridge.__all__ if name != "__version__"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_resolves_and_has_a_docstring(name: str) -> None:
    obj = getattr(dci6bridge, name)
    doc = getattr(obj, "__doc__", None)
    assert doc, f"dci6bridge.{name} has no docstring"
    assert doc.strip(), f"dci6bridge.{name} has an empty docstring"


def test_every_public_name_has_a_reference_block() -> None:
    documented = _documented_objects()
    missing = [n for n in PUBLIC if id(getattr(dci6bridge, n)) not in documented]
    assert missing == []


def test_every_testing_name_has_a_reference_block() -> None:
    testing = importlib.import_module("dci6bridge.testing")
    documented = _documented_objects()
    names = [n for n in testing.__all__ if not isinstance(getattr(testing, n), (str, int, float))]
    assert names, "dci6bridge.testing exports nothing"
    missing = [n for n in names if id(getattr(testing, n)) not in documented]
    assert missing == []


def test_reference_blocks_point_at_real_objects() -> None:
    # _documented_objects() raises ImportError / AttributeError for a stale path
    assert len(_documented_objects()) >= len(PUBLIC)


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if not line.startswith("#")]
    assert commands == [
        "python -m pip install -e . && dci6bridge demo",
        'python -m pip install -q -e ".[dev]" && python -m pytest',
    ]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
    # the docs' getting-started page gives the same two commands
    started = (DOCS / "getting-started.md").read_text()
    assert all(command in started for command in commands)
