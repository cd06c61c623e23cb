"""The front door: the README stays short and every relative link in it and in docs/ resolves, every page of
docs/ is reachable from the README, and every console command the pages name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from trocr_serving.launcher.server import ADMIN_KEY_HEADER

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_BYTES = 12_000
NOT_COMMANDS = {"trocr-triton", ADMIN_KEY_HEADER}  # the project's name; the admin key's header
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_COMMAND = re.compile(r"`(trocr-[a-z]+(?:-[a-z]+)*)[`\s]")  # `trocr-serve` or `trocr-serve --flag ...`
BLOCK_COMMAND = re.compile(r"^(?:\S*bin/|.*&& )?(trocr-[a-z]+(?:-[a-z]+)*)(?=\s|$)", re.MULTILINE)  # a shell line


def named_commands(text: str, inline: bool) -> set[str]:
    """Commands that shell lines of fenced blocks run, and (`inline`) those in inline code."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    in_blocks = {name for block in blocks for name in BLOCK_COMMAND.findall(block)}
    return in_blocks | (set(INLINE_COMMAND.findall(text)) if inline else set())


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", target)]


def test_the_readme_is_short():
    assert README.stat().st_size <= MAX_README_BYTES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = [target for target in relative_links(page) if not (page.parent / target.split("#")[0]).exists()]
    assert not broken, broken


def test_every_page_of_the_docs_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in relative_links(README)}
    assert {page.resolve() for page in PAGES[1:]} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_named_exists(page):
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    # The README's inline code too; the docs also name Kubernetes objects and volumes trocr-<something>.
    named = named_commands(page.read_text(), inline=page == README) - NOT_COMMANDS
    assert named <= scripts, sorted(named - scripts)
