"""README.md and docs/*.md: every relative link reaches a file, and every #anchor a heading of the
page it names; the README stays a door, not a manual."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
README_MAX_LINES = 200  # the layout rule: the README is a door; the manual lives in docs/

FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced blocks, where `[x](y)` is code, not a link."""
    return FENCED.sub("", text)


def links(page: Path) -> list[str]:
    return LINK.findall(CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8"))))


def anchors(page: Path) -> Iterator[str]:
    """GitHub's heading ids: lower case, punctuation but `-` and `_` dropped, spaces as `-`,
    repeats numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        yield slug if count == 0 else f"{slug}-{count}"


def relative_links() -> list[tuple[str, str]]:
    return [
        (str(page.relative_to(REPO)), target)
        for page in PAGES
        for target in links(page)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


@pytest.mark.parametrize("page,target", relative_links())
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    source = REPO / page
    linked = source.parent.joinpath(path).resolve() if path else source
    assert linked.exists(), f"{page}: {target} does not exist"
    if anchor:
        assert linked.suffix == ".md", f"{page}: {target}: an anchor into a file that is not a page"
        assert anchor in set(anchors(linked)), (
            f"{page}: {target}: no heading with that anchor in {linked.relative_to(REPO)}"
        )


def test_the_link_check_sees_the_pages_links():
    """A pattern that found nothing would pass every page."""
    found = relative_links()
    assert ("README.md", "docs/serving.md") in found
    assert {page for page, _ in found} >= {"README.md", "docs/training.md", "docs/kubernetes.md"}


def test_anchors_follow_githubs_heading_ids(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Evaluation: `imgclf evaluate`\n## Run folders on S3/GCS\n```\n# not a heading\n```\n"
        "## Run folders on S3/GCS\n### [Linked](x.md) title_with_underscore\n"
    )
    assert list(anchors(page)) == [
        "evaluation-imgclf-evaluate",
        "run-folders-on-s3gcs",
        "run-folders-on-s3gcs-1",
        "linked-title_with_underscore",
    ]


def test_the_readme_is_a_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to its docs/ "
        "page and link it"
    )
