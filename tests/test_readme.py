"""The README's runnable examples (```python blocks) run as written; ```py blocks name files a reader has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_python_block_is_collected():
    text = README.read_text()
    assert len(BLOCKS) == text.count("```python\n") >= 2  # the patchify and the model examples at least
    assert "jitrs.patchify(images, 16)" in "".join(BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str):
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
