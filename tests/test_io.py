"""Atomic writes: published files follow the umask, and temporaries of a killed write do not pile up."""
from __future__ import annotations

import os
import stat

import pytest

from vitpe.errors import DataError
from vitpe.io import atomic_path, read_json, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_published_files_follow_the_umask(tmp_path, umask_022):
    write_json(tmp_path / "metrics.json", {"top1": 1.0})
    assert _mode(tmp_path / "metrics.json") == 0o644
    with atomic_path(tmp_path / "curve.png", keep_extension=True) as tmp:
        assert tmp.name.endswith(".tmp.png")  # savefig picks the format from the extension
        tmp.write_bytes(b"png")
    assert _mode(tmp_path / "curve.png") == 0o644
    os.umask(0o077)
    write_json(tmp_path / "metrics.json", {"top1": 2.0})
    assert _mode(tmp_path / "metrics.json") == 0o600


def test_a_rerun_removes_the_temporaries_a_killed_write_left(tmp_path):
    stale = [tmp_path / ".state.pt.ab_c1234.tmp", tmp_path / ".loss.pdf.zz9y8x7w.tmp.pdf"]
    for path in stale:
        path.write_bytes(b"half")
    other = tmp_path / ".other.json.ab_c1234.tmp"  # another target's temporary is not ours to remove
    other.write_bytes(b"half")
    with atomic_path(tmp_path / "state.pt") as tmp:
        tmp.write_bytes(b"state")
    with atomic_path(tmp_path / "loss.pdf", keep_extension=True) as tmp:
        tmp.write_bytes(b"pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.ab_c1234.tmp", "loss.pdf", "state.pt"]
    assert (tmp_path / "state.pt").read_bytes() == b"state"


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    write_json(tmp_path / "metrics.json", {"top1": 1.0})
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "metrics.json") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert '"top1": 1.0' in (tmp_path / "metrics.json").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "metrics.json: metrics file not found"),
    (b"{\"top1\": ", "metrics.json: not valid JSON (Expecting value at line 1); expected the metrics file"),
    (b"\xff\xfe{}", "metrics.json: metrics file is not readable (UnicodeDecodeError)"),
    (b"[1, 2]", "metrics.json: expected a JSON object (metrics file), found list"),
])
def test_read_json_fails_with_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_json(path, "metrics file", require_object=True)
    assert str(info.value) == f"{tmp_path}/{message}" and "\n" not in str(info.value)


def test_read_json_reads_what_write_json_wrote(tmp_path):
    write_json(tmp_path / "m.json", {"top1": 1.5, "keys": [1, 2]})
    assert read_json(tmp_path / "m.json", "metrics file") == {"keys": [1, 2], "top1": 1.5}
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match=r"dir.json: metrics file is not readable \(Is a directory\)"):
        read_json(tmp_path / "dir.json", "metrics file")
