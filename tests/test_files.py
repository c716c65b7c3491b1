"""Crash-safe writing: whole files or none, with the permissions a plain open() gives."""

import contextlib
import os
import stat

import pytest

from tf_pacseg import files


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_writes_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "sub" / "out.json"
    with files.atomic_write(str(path), "w") as f:
        f.write("{}")
    assert path.read_text() == "{}"
    assert os.listdir(path.parent) == ["out.json"]


def test_an_error_inside_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="stop"), files.atomic_write(str(path)) as f:
        f.write(b"new, half written")
        raise RuntimeError("stop")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_write_gives_a_new_file_the_mode_the_umask_says(tmp_path, umask, expected):
    with _umask(umask):
        with files.atomic_write(str(tmp_path / "atomic.bin")) as f:
            f.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    assert _mode(tmp_path / "atomic.bin") == expected
    assert _mode(tmp_path / "plain.bin") == expected


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "private.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    with _umask(0o022), files.atomic_write(str(path)) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600
