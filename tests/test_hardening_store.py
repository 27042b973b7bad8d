"""The local store against hostile and careless surroundings: links planted inside it, a full disk, a
read-only folder. Each is refused with one line naming the problem, and the store and everything outside it
stay as they were."""

import errno
import os
import shutil
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import file_source_id
from pipeline.storage.store import LocalStore, StoreError
from tests.test_cli import vigil


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed) and its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def one_line_error(stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A folder beside the store whose files nothing may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "000000000000.npz").write_bytes(b"precious")
    (folder / "keep.txt").write_bytes(b"not the store's")
    return folder


@pytest.fixture(scope="module")
def indexed_store(tmp_path_factory, scene_video, vigil_cache) -> Path:
    path, _ = scene_video
    store = tmp_path_factory.mktemp("hardening") / "store"
    vigil("index", path, "--store", store, "--models", "tiny", "--no-progress")
    return store


@pytest.fixture()
def store_copy(indexed_store, tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(indexed_store, copy)
    return copy


# ---------------------------------------------------------------- links


def test_no_operation_follows_a_link_out_of_the_store(tmp_path, outside):
    root = tmp_path / "store"
    store = LocalStore(root)
    store.put("clips/mine/000000002000.npz", b"mine")
    (root / "clips" / "cam").symlink_to(outside, target_is_directory=True)  # a linked folder
    (root / "keyframes").symlink_to(outside, target_is_directory=True)  # a linked top folder
    (root / "sources").mkdir()
    (root / "sources" / "cam.json").symlink_to(outside / "keep.txt")  # a linked file
    before = snapshot(outside)

    refused = {
        "put": lambda: store.put("clips/cam/000000000000.npz", b"overwritten"),
        "create": lambda: store.create("keyframes/x.jpg", b"new"),
        "get": lambda: store.get("clips/cam/000000000000.npz"),
        "get a linked file": lambda: store.get("sources/cam.json"),
        "put over a linked file": lambda: store.put("sources/cam.json", b"overwritten"),
        "exists": lambda: store.exists("keyframes/keep.txt"),
        "list": lambda: store.list("clips/cam/"),
        "list above the link": lambda: store.list("clips/"),
        "list a prefix the link's name extends": lambda: store.list("clips/ca"),
        "delete": lambda: store.delete("clips/cam/000000000000.npz"),
        "delete a linked file": lambda: store.delete("sources/cam.json"),
        "delete_prefix": lambda: store.delete_prefix("clips/cam/"),
        "delete_prefix of the top folder": lambda: store.delete_prefix("keyframes/"),
    }
    for what, operation in refused.items():
        with pytest.raises(StoreError, match="is a symbolic link") as caught:
            operation()
        message = str(caught.value)
        assert "\n" not in message and str(outside) in message, what
        assert any(link in message for link in ("clips/cam", "keyframes", "sources/cam.json")), what
    assert snapshot(outside) == before
    # What passes through no link still works, the links themselves untouched.
    assert list(store.list("clips/mine/")) == ["clips/mine/000000002000.npz"]
    assert store.get("clips/mine/000000002000.npz") == b"mine"
    assert (root / "clips" / "cam").is_symlink() and (root / "sources" / "cam.json").is_symlink()


def test_vigil_remove_refuses_a_linked_folder_and_changes_nothing(store_copy, outside, scene_video):
    path, _ = scene_video
    clips = store_copy / "clips" / file_source_id(str(path))
    shutil.rmtree(clips)
    clips.symlink_to(outside, target_is_directory=True)
    before, rows = snapshot(store_copy), len(ClipIndex.load(LocalStore(store_copy)))

    result = vigil("remove", path, "--store", store_copy, check=False)
    assert result.returncode == 2
    one_line_error(result.stderr, "vigil remove: error:", "symbolic link", str(outside))
    assert snapshot(outside) == {"000000000000.npz": b"precious", "keep.txt": b"not the store's"}
    assert snapshot(store_copy) == before and len(ClipIndex.load(LocalStore(store_copy))) == rows == 10


def test_vigil_index_refuses_a_linked_folder(tmp_path, outside, scene_video, vigil_cache):
    path, _ = scene_video
    store = tmp_path / "store"
    (store / "keyframes").mkdir(parents=True)
    (store / "keyframes" / file_source_id(str(path))).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)

    result = vigil("index", path, "--store", store, "--models", "tiny", "--no-progress", check=False)
    assert result.returncode == 2
    one_line_error(result.stderr, "vigil index: error:", "symbolic link")
    assert snapshot(outside) == before
    assert len(ClipIndex.load(LocalStore(store))) == 0 and not list((store / "clips").rglob("*.npz"))


# ---------------------------------------------------------------- a full disk, a read-only file system


def fail_writes_under(monkeypatch, root: Path, code: int) -> None:
    """Every call that would change a file or folder under `root` fails with `code`, as a full disk (ENOSPC)
    or a read-only file system (EROFS) makes it fail; everything else goes on as usual."""

    def inside(path) -> bool:
        return Path(os.fspath(path)).is_relative_to(root)

    def refuse(path) -> None:
        raise OSError(code, os.strerror(code), os.fspath(path))

    real_open = os.open

    def open_for_reading_only(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def refused(real):
        def call(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", open_for_reading_only)
    for name in ("mkdir", "unlink", "rmdir", "replace", "link", "rename"):
        monkeypatch.setattr(os, name, refused(getattr(os, name)))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=errno.errorcode.get)
def test_file_system_failures_are_store_errors_naming_operation_key_and_reason(tmp_path, monkeypatch, code):
    store = LocalStore(tmp_path)
    store.put("sources/a.json", b"{}")
    fail_writes_under(monkeypatch, tmp_path, code)
    reason = os.strerror(code)
    for operation, call in {
        "write": lambda: store.put("sources/b.json", b"{}"),
        "create": lambda: store.create("index/generations/000000000001.json", b"{}"),
        "delete": lambda: store.delete("sources/a.json"),
    }.items():
        with pytest.raises(StoreError) as caught:
            call()
        assert str(caught.value).startswith(f"cannot {operation} '") and str(caught.value).endswith(reason)
        assert str(tmp_path) in str(caught.value)
    assert store.get("sources/a.json") == b"{}" and list(store.list()) == ["sources/a.json"]


def test_an_unreadable_object_is_a_store_error(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put("sources/a.json", b"{}")
    real_open = os.open

    def unreadable(path, flags, *args, **kwargs):
        if Path(os.fspath(path)).is_relative_to(tmp_path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", unreadable)
    with pytest.raises(StoreError, match=r"cannot read 'sources/a.json' in store .*: Permission denied"):
        store.get("sources/a.json")


def run_failing(capsys, argv: list) -> str:
    """`vigil ARGV` in this process: its one line of error (exit 2) and nothing on stdout about success."""
    assert main([str(arg) for arg in argv]) == 2
    return one_line_error(capsys.readouterr().err, f"vigil {argv[0]}: error:")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=errno.errorcode.get)
def test_commands_on_a_store_that_cannot_be_written_say_so_in_one_line(
    store_copy, monkeypatch, capsys, scene_video, code
):
    path, _ = scene_video
    before = snapshot(store_copy)
    fail_writes_under(monkeypatch, store_copy, code)
    reason = os.strerror(code)
    tiny = ["--store", store_copy, "--models", "tiny"]

    assert reason in run_failing(capsys, ["index", path, "--force", "--no-progress", *tiny])
    assert reason in run_failing(capsys, ["remove", path, "--store", store_copy])
    assert reason in run_failing(capsys, ["query", "add", "fence", "a person at the fence", "--store", store_copy])
    assert reason in run_failing(capsys, ["summarize", path, "--no-progress", *tiny])
    monkeypatch.undo()
    assert snapshot(store_copy) == before and len(ClipIndex.load(LocalStore(store_copy))) == 10


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the test above simulates it)")
def test_commands_on_a_read_only_store_folder_say_so_in_one_line(store_copy, scene_video):
    path, _ = scene_video
    before = snapshot(store_copy)
    folders = [store_copy, *(p for p in store_copy.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        tiny = ["--store", store_copy, "--models", "tiny"]
        for argv in (
            ["index", path, "--force", "--no-progress", *tiny],
            ["remove", path, "--store", store_copy],
            ["query", "add", "fence", "a person at the fence", "--store", store_copy],
            ["summarize", path, "--no-progress", *tiny],
        ):
            result = vigil(*argv, check=False)
            assert result.returncode == 2, argv
            one_line_error(result.stderr, f"vigil {argv[0]}: error:", "Permission denied")
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert snapshot(store_copy) == before and len(ClipIndex.load(LocalStore(store_copy))) == 10
