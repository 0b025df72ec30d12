"""atomic_output_dir: an output folder appears complete or not at all."""

from __future__ import annotations

import pytest

from megatron_lang.platform.files import atomic_output_dir

pytestmark = pytest.mark.unit


def test_a_failed_block_leaves_nothing_and_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "old.txt").read_text() == "old"  # replaced only once the new one is done


def test_existing_output_is_refused_unless_overwrite_or_empty_allowed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, allow_empty=True) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (out / "a.txt").read_text() == "a"

    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match="is not empty"):
        with atomic_output_dir(out, allow_empty=True, error=MyError):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
