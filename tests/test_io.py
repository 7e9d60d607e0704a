"""ltv.io.atomic_write: the target appears whole or not at all, and no temp file is left behind."""

from __future__ import annotations

import pytest

from ltv.io import atomic_write


def test_writes_the_file_under_its_name_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "deep" / "er" / "out.csv"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.csv.tmp-")
        assert not tmp.exists() and not target.exists()  # nothing visible while the block runs
        tmp.write_text("row_id,iap_revenue_d7\n")
    assert target.read_text() == "row_id,iap_revenue_d7\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_write(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_a_failing_block_leaves_the_old_file_and_no_temp(tmp_path, error):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_a_failing_block_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(tmp_path / "new.parquet") as tmp:
            tmp.write_bytes(b"PAR1")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wrote nothing"):
        with atomic_write(tmp_path / "x.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_builds_and_replaces_a_folder(tmp_path):
    root = tmp_path / "data"
    (root / "old").mkdir(parents=True)
    (root / "old" / "f").write_text("1")
    with atomic_write(root) as tmp:
        (tmp / "train").mkdir(parents=True)
        (tmp / "train" / "part-0").write_text("2")
        assert (root / "old" / "f").read_text() == "1"
    assert [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))] == ["train", "train/part-0"]
    assert sorted(tmp_path.iterdir()) == [root]  # neither the temp nor the moved-aside old folder is left


def test_a_failing_folder_build_keeps_the_old_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep").write_text("1")
    with pytest.raises(OSError):
        with atomic_write(root) as tmp:
            (tmp / "train").mkdir(parents=True)
            raise OSError("interrupted")
    assert [p.name for p in root.iterdir()] == ["keep"] and sorted(tmp_path.iterdir()) == [root]


def test_two_writers_get_different_temp_paths(tmp_path):
    with atomic_write(tmp_path / "x") as a, atomic_write(tmp_path / "x") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x").read_text() == "a"  # the outer block renames last: its content wins
