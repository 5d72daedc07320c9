"""The documentation cannot rot: every relative link in README.md and docs/*.md resolves.

A link's file must exist inside the repository, and a `#anchor` (to another page or the
same one) must name a heading of that page, slugged the way GitHub renders it. Links in
fenced code blocks and inline code are not links. Plain files only: no network.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, …


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(_CODE_SPAN.sub("", line))
    return out


def links(text: str) -> list[str]:
    """Every link target in a Markdown text, in order (images included)."""
    found: list[str] = []
    for line in _prose_lines(text):
        found.extend(_INLINE_LINK.findall(line))
        ref = _REFERENCE_LINK.match(line)
        if ref:
            found.append(ref.group(1))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows as its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings; repeated headings get -1, -2 … as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m is None:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path, root: Path) -> list[str]:
    """What is wrong with the relative links of one page: one line per problem."""
    problems: list[str] = []
    for target in links(page.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{target}: an absolute path, not a link inside the repository")
            continue
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{target}: points outside the repository")
        elif not dest.is_file():
            problems.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(
                dest.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{fragment} in {dest.relative_to(root)}")
    return problems


def test_there_are_pages_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page, REPO) == []


def test_readme_links_every_docs_page() -> None:
    readme_targets = {t.partition("#")[0] for t in links((REPO / "README.md").read_text())}
    docs = {p.relative_to(REPO).as_posix() for p in PAGES if p.parent.name == "docs"}
    assert docs - readme_targets == set()


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `--json` keys\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the---json-keys) [ok](#top-title) "
        "[ok](https://example.com/x.md) `[code](missing.md)`\n"
        "# Top title\n"
        "[gone](docs/b.md) [anchor](docs/a.md#nope) [self](#nope) [out](../x.md) "
        "![img](/etc/hosts)\n"
        "```\n[fenced](missing.md)\n```\n"
        "[ref]: docs/c.md\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#nope: no heading #nope in docs/a.md",
        "#nope: no heading #nope in README.md",
        "../x.md: points outside the repository",
        "/etc/hosts: an absolute path, not a link inside the repository",
        "docs/c.md: no such file",
    ]


def test_github_slugs() -> None:
    assert github_slug("From your machine: `run-loadtest.sh`") == "from-your-machine-run-loadtestsh"
    assert github_slug("Interactively in the cluster (the original's recipe, unchanged)") == (
        "interactively-in-the-cluster-the-originals-recipe-unchanged")
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
