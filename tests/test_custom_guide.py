"""docs/custom.md shows the example's code, not a copy that drifts: every code block marked
`<!-- file: PATH -->` is that file, whole; every block marked `<!-- excerpt: PATH -->` is a
verbatim part of it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "custom.md"
BLOCK = re.compile(r"<!-- (file|excerpt): (\S+) -->\n```python\n(.*?)```\n", re.S)


def test_the_guide_shows_the_example_files_as_they_are() -> None:
    blocks = BLOCK.findall(GUIDE.read_text())
    kinds = {(kind, path) for kind, path, _ in blocks}
    assert ("file", "examples/custom_flavor/litserve_flavor.py") in kinds
    assert ("excerpt", "tests/test_custom_flavor_example.py") in kinds
    assert ("excerpt", "examples/custom_flavor/run.py") in kinds
    for kind, path, code in blocks:
        source = (ROOT / path).read_text()
        if kind == "file":
            assert code == source, f"docs/custom.md's copy of {path} differs from the file"
        else:
            assert code.strip() and code.strip() in source, (
                f"docs/custom.md quotes {path} with code that is not in the file"
            )
