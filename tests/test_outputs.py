"""Staged outputs: all or nothing."""

from __future__ import annotations

import pytest

from transferlab.outputs import staged_outputs


def test_outputs_appear_only_when_the_block_succeeds(tmp_path):
    final_dir, final_file = tmp_path / "models" / "m", tmp_path / "metrics" / "m.json"
    with staged_outputs() as outs:
        (outs.path(final_dir, is_dir=True) / "w.bin").write_text("weights")
        outs.path(final_file).write_text("{}")
        assert not final_dir.exists() and not final_file.exists()
    assert (final_dir / "w.bin").read_text() == "weights" and final_file.read_text() == "{}"


def test_a_crash_leaves_the_old_outputs_and_no_temp_files(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("good")
    with pytest.raises(RuntimeError), staged_outputs() as outs:
        (outs.path(final, is_dir=True) / "new").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in final.iterdir()] == ["old"]


def test_replacing_an_output_drops_its_stale_files(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "stale").write_text("x")
    with staged_outputs() as outs:
        (outs.path(final, is_dir=True) / "fresh").write_text("y")
    assert [p.name for p in final.iterdir()] == ["fresh"]
