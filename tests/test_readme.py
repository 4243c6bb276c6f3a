"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_example_runs(number, tmp_path, monkeypatch):
    code = BLOCKS[number]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    if "likewise.load(" in code:  # a small stand-in for the model `likewise demo` writes
        from likewise.export import save_model
        from likewise.models import build_model

        model = build_model("convnet", (1, 28, 28), embedding_dim=8, trunk_kwargs={"widths": [4, 8]})
        save_model(tmp_path / "runs" / "demo" / "model", model.eval())
    exec(compile(code, f"README.md block {number}", "exec"), namespace)
    if "likewise.load(" in code:
        assert namespace["emb"].shape == (3, 8)
