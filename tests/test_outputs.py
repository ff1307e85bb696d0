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


def test_a_full_disk_mid_write_names_the_output_and_leaves_nothing(tmp_path):
    """/dev/full fails every write with ENOSPC, root included: a real full disk for one file."""
    from transferlab.errors import UserError

    final = tmp_path / "out.json"
    final.write_text("good")
    with (
        pytest.raises(UserError, match=f"cannot write output {final}: cannot be written: No space left"),
        staged_outputs() as outs,
    ):
        staged = outs.path(final)
        staged.symlink_to("/dev/full")
        with open(staged, "w") as file:
            file.write("x" * 10_000)
    assert final.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
