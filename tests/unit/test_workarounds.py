"""Every workaround for the pip server's Triton 2.51 is tagged where it lives, `# WAR(2.51): <what>`, with the
release or change that fixed it (or that none is known), so that they can be found and deleted together when
2.51 is no longer served."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("build", "client", "loadtest", "model_repository")


def tagged_comments() -> list[tuple[Path, str]]:
    """Each `# WAR` comment with the comment lines that continue it."""
    found = []
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            lines = path.read_text().splitlines()
            for index, line in enumerate(lines):
                if re.search(r"#\s*WAR\b", line):
                    block = [line]
                    for following in lines[index + 1 :]:
                        if not following.strip().startswith("#"):
                            break
                        block.append(following)
                    found.append((path.relative_to(ROOT), " ".join(block)))
    return found


def test_each_workaround_names_its_server_and_its_fix():
    comments = tagged_comments()
    assert len(comments) >= 5  # the ones this test was written with; removing one is a decision, not a slip
    for path, comment in comments:
        assert "WAR(2.51):" in comment, f"{path}: a WAR names the server release it works around"
        assert "Fixed in:" in comment, f"{path}: a WAR says which release or change fixed it (or none known)"
