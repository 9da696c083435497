"""URI storage: local file:// and plain-path writes are atomic and leave no temporaries behind."""
import os
from pathlib import Path

import pytest

from rdd_io import storage

pytestmark = pytest.mark.unit


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_and_read_through_file_uri_and_plain_path(tmp_path):
    uri = storage.to_uri(tmp_path / "out" / "nested" / "a.bin")
    assert uri.startswith("file:///")
    storage.write_bytes(uri, b"\x00\x01binary")
    assert (tmp_path / "out" / "nested" / "a.bin").read_bytes() == b"\x00\x01binary"  # parents created
    assert storage.read_bytes(uri) == b"\x00\x01binary"

    plain = str(tmp_path / "b.txt")
    storage.write_text(plain, "héllo\n")
    assert storage.read_text(storage.to_uri(plain)) == "héllo\n"
    assert storage.exists(plain) and storage.exists(storage.to_uri(plain))
    assert not storage.exists(storage.join(storage.to_uri(tmp_path), "missing.txt"))


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    storage.write_text(str(target), "first")
    storage.write_text(storage.to_uri(target), "second")
    assert target.read_text() == "second"
    assert _entries(tmp_path) == ["summary.json"]


def test_failed_rename_keeps_old_content_and_removes_temporary(tmp_path, monkeypatch):
    target = tmp_path / "weights.h5"
    storage.write_bytes(str(target), b"old")
    seen = []

    def broken_replace(src, dst):
        seen.append(Path(src))
        assert Path(src).read_bytes() == b"new content"  # fully written before the rename
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        storage.write_bytes(str(target), b"new content")
    monkeypatch.undo()
    assert seen and seen[0].parent == tmp_path  # the temporary lived beside the target
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["weights.h5"]


def test_failure_while_writing_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    storage.write_text(str(target), "a,b\n")

    def broken_fsync(fd):
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="no space"):
        storage.write_text(str(target), "c,d\n" * 1000)
    monkeypatch.undo()
    assert target.read_text() == "a,b\n"
    assert _entries(tmp_path) == ["table.csv"]


def test_interrupt_during_write_removes_temporary(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(tmp_path / "x.bin"), b"data")
    monkeypatch.undo()
    assert _entries(tmp_path) == []


def test_list_names_hides_temporaries(tmp_path):
    folder = storage.to_uri(tmp_path)
    for name in ("b.json", "a.h5"):
        storage.write_text(storage.join(folder, name), "x")
    (tmp_path / ".a.h5.k3j2.tmp").write_text("half")
    (tmp_path / "c.h5._tmp-0123abcd").write_text("half")
    storage.makedirs(storage.join(folder, "sub", "deeper"))
    assert storage.list_names(folder) == ["a.h5", "b.json", "sub"]
    assert storage.list_names(str(tmp_path)) == ["a.h5", "b.json", "sub"]
    assert storage.list_names(storage.join(folder, "sub")) == ["deeper"]
    assert storage.list_names(storage.join(folder, "absent")) == []


def test_to_uri(tmp_path, monkeypatch):
    assert storage.to_uri(tmp_path / "x") == f"file://{tmp_path}/x"
    assert storage.to_uri("hdfs://namenode:9000/out/") == "hdfs://namenode:9000/out"
    assert storage.to_uri("file:///data/run") == "file:///data/run"
    monkeypatch.chdir(tmp_path)
    assert storage.to_uri("outputs/smoke") == f"file://{tmp_path}/outputs/smoke"


def test_join():
    assert storage.join("hdfs://nn:9000/out/", "/a/", "b.json") == "hdfs://nn:9000/out/a/b.json"
    assert storage.join("file:///x", "y") == "file:///x/y"
    assert storage.join("file:///x") == "file:///x"


def test_local_path(tmp_path, monkeypatch):
    assert storage.local_path("file:///a/b") == Path("/a/b")
    assert storage.local_path("/a/b/../c") == Path("/a/c")
    monkeypatch.chdir(tmp_path)
    assert storage.local_path("rel/f.txt") == tmp_path / "rel" / "f.txt"
    with pytest.raises(ValueError, match="hdfs://nn/x"):
        storage.local_path("hdfs://nn/x")
    assert storage.is_local("file:///a") and storage.is_local("a/b") and not storage.is_local("s3a://b/k")


def test_to_uri_and_local_path_round_trip_special_characters(tmp_path):
    path = tmp_path / "my outputs" / "run#1" / "f.txt"
    uri = storage.to_uri(path)
    assert storage.local_path(uri) == path
    storage.write_text(uri, "x")
    assert path.read_text() == "x"


@pytest.mark.parametrize("call", [lambda uri: storage.write_bytes(uri, b"x"), storage.list_names])
def test_unreachable_namenode_fails_within_bounds_naming_the_uri(call):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"hdfs://127.0.0.1:{s.getsockname()[1]}/outputs/run-1/summary.json"
    with pytest.raises(storage.StorageError, match=f"{uri}: .*(Connection refused|connect)"):
        call(uri)


@pytest.mark.parametrize("content", [[], ["part-00000.h5.tmp-1", "other-00000.h5", "part-00000.npy"]])
def test_read_parts_of_a_folder_without_parts_names_the_folder(tmp_path, content):
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name in content:
        (folder / name).write_bytes(b"x")
    uri = storage.to_uri(folder)
    with pytest.raises(FileNotFoundError) as info:
        storage.read_parts(uri, "part-")
    assert str(info.value) == f"{uri}: no part-*.h5 files"
    assert sorted(p.name for p in folder.iterdir()) == sorted(content)  # nothing created or removed


def test_read_parts_of_a_missing_folder_names_it(tmp_path):
    uri = storage.to_uri(tmp_path / "never-written")
    with pytest.raises(FileNotFoundError, match=r"never-written: no part-\*\.h5 files$"):
        storage.read_parts(uri, "part-")
    (tmp_path / "never-written").mkdir()
    (tmp_path / "never-written" / "part-00001.h5").write_bytes(b"one")
    (tmp_path / "never-written" / "part-00000.h5").write_bytes(b"zero")
    assert [(Path(p).name, b) for p, b in storage.read_parts(uri, "part-")] == [("part-00000.h5", b"zero"),
                                                                               ("part-00001.h5", b"one")]


def test_read_parts_prefix_and_suffix_may_meet(tmp_path):
    """A Dom-ST bundle <id>.h5 is the part of prefix "<id>." with suffix ".h5"; W010.h5 is not W01's."""
    for name in ("W01.h5", "W010.h5", "W02.h5"):
        (tmp_path / name).write_bytes(name.encode())
    assert [(Path(p).name, b) for p, b in storage.read_parts(storage.to_uri(tmp_path), "W01.")] == \
        [("W01.h5", b"W01.h5")]


def test_hdfs_in_a_child_forked_after_use_fails_at_once_naming_the_uri(monkeypatch):
    """hdfs-native's runtime does not survive fork(): a forked child would block forever, so it is refused."""
    monkeypatch.setattr(storage, "_HDFS_PID", os.getpid() + 1)  # as if a parent process had used the client
    with pytest.raises(storage.StorageError, match="hdfs://nn:9000/x/y.h5: .*forked.*hdfs-native cannot be used"):
        storage.read_bytes("hdfs://nn:9000/x/y.h5")


def test_download_tree_copies_every_file_but_temporaries(tmp_path):
    src = tmp_path / "src"
    storage.write_text(str(src / "a.txt"), "a")
    storage.write_bytes(str(src / "sub" / "deep" / "b.bin"), b"\x00\x01")
    (src / f"c{storage.TMP_MARK}x").write_text("half")  # another writer's temporary
    copied = storage.download_tree(storage.to_uri(src), tmp_path / "dst")
    assert copied == ["a.txt", "sub/deep/b.bin"]
    assert sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*") if p.is_file()) \
        == copied
    assert (tmp_path / "dst" / "sub" / "deep" / "b.bin").read_bytes() == b"\x00\x01"


class _NameNode:
    """What _around_datanodes asks of a file system: whether the NameNode answers."""
    def __init__(self, up: bool = True):
        self.up, self.asked = up, 0

    def info(self, path):
        self.asked += 1
        if not self.up:
            raise OSError("Connection refused (os error 111)")
        return {"type": "directory"}


def _failing(times: int, exc: Exception):
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "written"
    return attempt, calls


def test_a_datanode_failure_is_tried_again_while_the_namenode_answers(monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    attempt, calls = _failing(3, OSError("Connection refused (os error 111)"))
    assert storage._around_datanodes(_NameNode(), attempt) == "written" and len(calls) == 4


@pytest.mark.parametrize("exc", [FileNotFoundError("/x"), PermissionError("/x"),
                                 Exception('RPCError("org.apache.hadoop.hdfs.protocol.QuotaExceededException", "q")')])
def test_a_namenode_answer_is_never_tried_again(monkeypatch, exc):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    attempt, calls = _failing(1, exc)
    with pytest.raises(type(exc)):
        storage._around_datanodes(_NameNode(), attempt)
    assert len(calls) == 1


def test_an_unreachable_namenode_fails_at_once_and_a_lasting_datanode_failure_within_the_bound(monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    attempt, calls = _failing(10, OSError("Connection refused (os error 111)"))
    with pytest.raises(OSError):
        storage._around_datanodes(_NameNode(up=False), attempt)
    assert len(calls) == 1
    clock = iter(range(0, 10_000, 30))  # a check every 30 s: tries at 0, 30 and 60 s; at 90 s the bound is reached
    monkeypatch.setattr(storage.time, "monotonic", lambda: next(clock))
    attempt, calls = _failing(10, OSError("Connection refused (os error 111)"))
    with pytest.raises(OSError):
        storage._around_datanodes(_NameNode(), attempt)
    assert len(calls) == 3


def test_a_try_without_an_answer_fails_after_its_bound_and_is_tried_again(monkeypatch):
    import threading
    monkeypatch.setattr(storage, "HDFS_CALL_TIMEOUT_S", 0.2)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    release, calls = threading.Event(), []

    def attempt():
        calls.append(1)
        if len(calls) == 1:
            release.wait(30)  # the first try hangs (a native call that never returns)
        return "written"
    try:
        assert storage._around_datanodes(_NameNode(), attempt) == "written" and len(calls) == 2
    finally:
        release.set()
    with pytest.raises(TimeoutError, match="no answer from HDFS within 0s"):
        storage._bounded(lambda: release.wait(30) and threading.Event().wait(30), 0.2)
