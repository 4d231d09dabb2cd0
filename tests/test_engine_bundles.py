"""Bundle extraction refuses anything that could escape its folder (a table of hostile tars)."""
from __future__ import annotations

import io
import tarfile

import pytest

from vast_magic.backends.local.bundles import extracted_bundle, safe_extract, worker_dir
from vast_magic.errors import BundleError


def _member(name: str, kind=tarfile.REGTYPE, data: bytes = b"x", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar(path, members) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, data)
    return str(path)


def good():
    return [_member("config.json", data=b"{}"), _member("pkg", tarfile.DIRTYPE), _member("pkg/mod.py", data=b"x = 1"),
            _member("pkg/alias.py", tarfile.SYMTYPE, linkname="mod.py"),
            _member("hard.py", tarfile.LNKTYPE, linkname="pkg/mod.py")]


@pytest.mark.parametrize("members, message", [
    ([_member("../evil.py")], "'..'"),
    ([_member("pkg/../../evil.py")], "'..'"),
    ([_member("/etc/evil")], "absolute"),
    ([_member("link", tarfile.SYMTYPE, linkname="/etc/passwd")], "outside"),
    ([_member("link", tarfile.SYMTYPE, linkname="../../outside")], "outside"),
    ([_member("pkg/link", tarfile.SYMTYPE, linkname="../../x")], "outside"),
    ([_member("hard", tarfile.LNKTYPE, linkname="../x")], "'..'|outside"),
    ([_member("dev", tarfile.CHRTYPE)], "device"),
    ([_member("blk", tarfile.BLKTYPE)], "device"),
    ([_member("fifo", tarfile.FIFOTYPE)], "fifo"),
    ([_member("big.bin", data=b"y" * 2048)], "limit"),
])
def test_safe_extract_refuses(tmp_path, members, message):
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match=message):
        safe_extract(_tar(tmp_path / "b.tar.gz", members), dest, max_member=1024)
    assert not dest.exists()


def test_safe_extract_total_limit(tmp_path):
    members = [_member(f"f{i}", data=b"z" * 600) for i in range(3)]
    with pytest.raises(BundleError, match="unpacks to 1800 bytes"):
        safe_extract(_tar(tmp_path / "b.tar.gz", members), tmp_path / "out", max_total=1000)


def test_safe_extract_accepts_files_dirs_and_inner_links(tmp_path):
    root = safe_extract(_tar(tmp_path / "b.tar.gz", good()), tmp_path / "out")
    assert (root / "pkg" / "alias.py").read_text() == "x = 1"
    assert (root / "hard.py").read_text() == "x = 1"


def test_not_a_tar_is_a_bundle_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(BundleError, match="cannot read bundle"):
        safe_extract(bad, tmp_path / "out")


def test_extraction_is_cached_and_worker_copies_are_private(tmp_path):
    tar = _tar(tmp_path / "b.tar.gz", good())
    first = extracted_bundle(tmp_path / "home", tar)
    assert extracted_bundle(tmp_path / "home", tar) == first
    copy = worker_dir(first, tmp_path / "w1")
    (copy / "pkg" / "mod.py").write_text("x = 2")                   # a runs script writing next to itself
    assert (first / "pkg" / "mod.py").read_text() == "x = 1"
