"""The feedback store: records and validation, WAL mode, concurrent writer processes, a process killed
in the middle of a write (deterministically and at a random moment), and damaged or foreign files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from detoxrl.errors import UserError
from feedback.store import FeedbackStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *args: str) -> subprocess.Popen:
    """Run ``code`` in a new Python process (the project importable), stdout/stderr piped."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_add_list_count_and_get(tmp_path):
    store = FeedbackStore(str(tmp_path / "fb.db"))
    a = store.add("you idiot", "you are wrong", "accept", "sft@1")
    b = store.add("  shut up  ", "shut up", "reject", "sft@1", correction=" please stop ")
    c = store.add("damn it", "oh no", "reject", "fb@2")
    assert (a.id, b.id, c.id) == (1, 2, 3)
    assert b.input == "shut up" and b.correction == "please stop"  # stripped
    assert a.created_at.endswith("Z") and a.created_at[:4].isdigit()
    assert store.count() == {"records": 3, "accept": 1, "reject": 2, "corrections": 1}
    assert [r.id for r in store.records()] == [1, 2, 3]
    assert [r.id for r in store.records(newest_first=True, limit=2)] == [3, 2]
    assert [r.id for r in store.records(verdict="reject")] == [2, 3]
    assert [r.id for r in store.records(model_versions=["fb@2"])] == [3]
    assert store.get(2) == b and store.get(99) is None
    # a second handle (another process, in real use) sees the same records
    assert FeedbackStore(store.path, create=False).records() == store.records()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("kwargs,message", [
    (dict(verdict="maybe"), "verdict 'maybe' is not one of accept, reject"),
    (dict(input="   "), "'input' is empty"),
    (dict(output=""), "'output' is empty"),
    (dict(model_version=""), "'model_version' is empty"),
    (dict(input="x" * 20_001), "'input' is 20001 characters; the limit is 20000"),
])
def test_bad_records_are_refused_and_nothing_is_written(tmp_path, kwargs, message):
    store = FeedbackStore(str(tmp_path / "fb.db"))
    record = {**dict(input="a", output="b", verdict="accept", model_version="v"), **kwargs}
    with pytest.raises(UserError, match=message):
        store.add_many([dict(input="fine", output="fine too", verdict="accept", model_version="v"), record])
    assert store.count()["records"] == 0  # the good record of the batch was not written either


def test_missing_store_is_refused_when_not_creating(tmp_path):
    with pytest.raises(UserError, match="does not exist; collect feedback first"):
        FeedbackStore(str(tmp_path / "nope.db"), create=False)
    with pytest.raises(UserError, match="is a folder"):
        FeedbackStore(str(tmp_path))


def test_trainings_are_recorded(tmp_path):
    store = FeedbackStore(str(tmp_path / "fb.db"))
    ids = [store.add(f"in {i}", f"out {i}", "accept", "v1").id for i in range(3)]
    store.record_training("v1", "v2@abc", "/out", ids[::-1], {"pairs": 3})
    (t,) = store.trainings()
    assert (t.parent_version, t.new_version, t.record_ids, t.summary) == ("v1", "v2@abc", [1, 2, 3], {"pairs": 3})


WRITER = """
    import os, sys, time
    from feedback.store import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    name = sys.argv[2]
    open(sys.argv[1] + "." + name + ".ready", "w").close()  # a barrier: start writing together
    while sum(os.path.exists(sys.argv[1] + ".w%d.ready" % k) for k in range(4)) < 4:
        time.sleep(0.01)
    for i in range(40):
        store.add(f"{name} input {i}", f"{name} output {i}", "accept" if i % 2 else "reject", name)
        time.sleep(0.005)  # a reviewer's pace: the other writers get the lock in between
    store.add_many([dict(input=f"{name} batch {i}", output="o", verdict="accept", model_version=name)
                    for i in range(20)])
    print("done")
"""


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "fb.db")
    FeedbackStore(path)
    procs = [_python(WRITER, path, f"w{k}") for k in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done", err[-2000:]
    records = FeedbackStore(path).records()
    assert len(records) == 4 * 60 and [r.id for r in records] == list(range(1, 241))
    for k in range(4):
        mine = [r for r in records if r.model_version == f"w{k}"]
        # each writer's records are all there, in its own order
        expected = [f"w{k} input {i}" for i in range(40)] + [f"w{k} batch {i}" for i in range(20)]
        assert [r.input for r in mine] == expected
        batch_ids = [r.id for r in mine[40:]]
        assert batch_ids == list(range(batch_ids[0], batch_ids[0] + 20))  # one transaction: contiguous ids
    # the writers really ran at the same time: in id order, the writer changes many times (not 4 blocks)
    order = [r.model_version for r in records]
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches > 10, switches


KILLED_INSIDE_TRANSACTION = """
    import contextlib, sys, time
    import feedback.store as s
    store = s.FeedbackStore(sys.argv[1])
    store.add("committed before", "kept", "accept", "v1")
    original = s.FeedbackStore._transaction

    @contextlib.contextmanager
    def stall_before_commit(conn):
        with original(conn):
            yield conn
            print("inserted, not committed", flush=True)
            time.sleep(120)

    s.FeedbackStore._transaction = staticmethod(stall_before_commit)
    store.add_many([dict(input=f"lost {i}", output="o", verdict="reject", model_version="v1") for i in range(50)])
"""


def test_kill_between_insert_and_commit_leaves_no_partial_write(tmp_path):
    path = str(tmp_path / "fb.db")
    proc = _python(KILLED_INSIDE_TRANSACTION, path)
    line = proc.stdout.readline()
    assert line.strip() == "inserted, not committed", proc.stderr.read()[-2000:]
    with sqlite3.connect(path) as reader:  # WAL: a reader is not blocked and sees only the committed row
        assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1
    assert FeedbackStore(path, create=False).count()["records"] == 1  # opening takes no write lock
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    store = FeedbackStore(path, create=False)  # opens cleanly: integrity check passes
    assert [r.input for r in store.records()] == ["committed before"]
    assert store.add("after the crash", "x", "accept", "v1").id == 2  # and takes writes again


KILLED_AT_RANDOM = """
    import sys
    from feedback.store import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    print("writing", flush=True)
    n = 0
    while True:
        store.add_many([dict(input=f"batch {n} item {i}", output="o" * 200, verdict="accept", model_version="v")
                        for i in range(25)])
        n += 1
"""


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_kill_at_a_random_moment_keeps_whole_batches(tmp_path, delay):
    path = str(tmp_path / "fb.db")
    proc = _python(KILLED_AT_RANDOM, path)
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()[-2000:]
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    records = FeedbackStore(path, create=False).records()
    assert proc.returncode == -signal.SIGKILL  # killed while still writing
    assert len(records) >= 25 and len(records) % 25 == 0  # some batches committed; every batch whole or absent
    batches = {r.input.split(" item ")[0] for r in records}
    assert batches == {f"batch {n}" for n in range(len(records) // 25)}


def _store_with_records(path: str, n: int = 400) -> None:
    FeedbackStore(path).add_many([dict(input=f"input number {i} " + "x" * 100, output=f"output {i}",
                                       verdict="accept", model_version="v") for i in range(n)])


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    path = tmp_path / "fb.db"
    path.write_text("id,input,output\n1,a,b\n")
    with pytest.raises(UserError, match=r"is not an SQLite database .* move this file aside"):
        FeedbackStore(str(path))


def test_damaged_pages_are_a_clear_error(tmp_path):
    path = str(tmp_path / "fb.db")
    _store_with_records(path)
    assert not os.path.exists(path + "-wal")  # checkpointed on close: the pages are in the main file
    size = os.path.getsize(path)
    assert size > 5 * 4096
    with open(path, "r+b") as fh:  # overwrite two b-tree pages in the middle with garbage
        fh.seek(2 * 4096)
        fh.write(bytes(range(256)) * 32)
    with pytest.raises(UserError, match=r"fb.db' is damaged .*restore a backup.*\.recover"):
        FeedbackStore(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / "fb.db")
    _store_with_records(path)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(UserError, match="is damaged"):
        FeedbackStore(path)


def test_another_sqlite_database_is_not_mistaken_for_a_store(tmp_path):
    path = str(tmp_path / "other.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(UserError, match=r"is an SQLite database but not a detoxrl feedback store \(tables: users\)"):
        FeedbackStore(path)


def test_a_correction_is_a_reject_that_changes_the_output(tmp_path):
    store = FeedbackStore(str(tmp_path / "fb.db"))
    with pytest.raises(UserError, match="a correction goes with verdict 'reject'"):
        store.add("you idiot", "you person", "accept", "v", correction="you are wrong")
    with pytest.raises(UserError, match="the correction is the same as the output"):
        store.add("you idiot", "you person", "reject", "v", correction=" you person ")
    assert store.add("you idiot", "you person", "reject", "v", correction="   ").correction is None  # blank: none
