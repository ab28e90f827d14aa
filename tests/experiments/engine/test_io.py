import json
import math
import multiprocessing
import os
import stat

import pytest

from idspn_experiments.engine.io import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    exclusive_lock,
    loads_json,
    remove_temporaries,
    writable_folder,
)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def broken(f):
        f.write(b'{"step": 2, "trunc')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text().strip().startswith("{") and '"step": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_permissions_of_an_ordinary_open(tmp_path, monkeypatch, umask):
    old = os.umask(umask)
    try:
        if os.path.exists("/proc/self/status"):  # the umask is read, never set (a race with other threads)
            monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("atomic_write set the umask"))
        atomic_write_text(tmp_path / "results.md", "| a |\n")
        with open(tmp_path / "plain.md", "w") as f:
            f.write("x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "results.md").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.md").stat().st_mode) == 0o666 & ~umask


def test_remove_temporaries_clears_what_a_killed_writer_left(tmp_path):
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp").write_text("not ours: no leading dot")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    removed = remove_temporaries(tmp_path)
    assert [p.name for p in removed] == [".last.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "metrics.jsonl"]
    assert remove_temporaries(tmp_path / "missing") == []


def _try_lock(path, queue):
    with exclusive_lock(path, wait=False) as held:
        queue.put(held)


def test_a_held_lock_refuses_a_second_process_and_is_freed_on_exit(tmp_path):
    lock = tmp_path / ".lock"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with exclusive_lock(lock) as held:
        assert held
        child = context.Process(target=_try_lock, args=(lock, queue))
        child.start()
        child.join(60)
        assert queue.get(timeout=10) is False
    child = context.Process(target=_try_lock, args=(lock, queue))
    child.start()
    child.join(60)
    assert queue.get(timeout=10) is True


@pytest.mark.parametrize("kind", ["empty", "file", "under_file"])
def test_writable_folder_names_the_argument(tmp_path, kind):
    (tmp_path / "a_file").write_text("x")
    path = {"empty": "  ", "file": tmp_path / "a_file", "under_file": tmp_path / "a_file" / "sub"}[kind]
    with pytest.raises(ValueError, match="--out"):
        writable_folder(path, "--out")


def test_writable_folder_rejects_a_folder_it_cannot_write(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # what a read-only folder gives a non-root user

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ValueError, match="--out .* is not writable"):
        writable_folder(tmp_path, "--out")


def test_writable_folder_creates_missing_parents(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "--out").is_dir()


def test_json_files_are_strict_and_read_back_non_finite_numbers(tmp_path):
    # A diverged run's metrics hold NaN and inf, which JSON has no numbers for: strict parsers
    # (jq, JavaScript) must still read the file, and the suite must read the floats back.
    metrics = {"loss": math.nan, "grad": [math.inf, -math.inf, 1.5], "name": "ok"}
    atomic_write_json(tmp_path / "result.json", metrics)
    text = (tmp_path / "result.json").read_text()

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse)["grad"][2] == 1.5  # strict JSON
    back = loads_json(text)
    assert math.isnan(back["loss"]) and back["grad"] == [math.inf, -math.inf, 1.5] and back["name"] == "ok"
    assert math.isnan(loads_json('{"loss": NaN}')["loss"])  # files written before, with bare NaN
    assert json.loads(dumps_json({"x": math.nan}), parse_constant=refuse) == {"x": "NaN"}
