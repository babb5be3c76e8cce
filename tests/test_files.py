"""atomic_path: the final name holds either the old file or the complete new one, never a part."""

from __future__ import annotations

import pytest

from rosette_bmz.files import atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "report.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.json.") and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_path_keeps_the_old_file_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "weights.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]
