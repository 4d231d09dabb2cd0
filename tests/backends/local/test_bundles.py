"""Bundle extraction refuses anything that could escape its folder (a table of hostile tars).

Links are resolved against the final tree, so a chain that leaves the bundle
is refused whatever the order of its links in the archive.
"""
from __future__ import annotations

import io
import tarfile

import pytest

from vast_magic.backends.local import bundles
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


def _link(name: str, target: str) -> tuple:
    return _member(name, tarfile.SYMTYPE, linkname=target)


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
    # links that each stay inside but leave together, in both archive orders (resolved on the final tree)
    ([_link("x", "."), _link("s1", "x/..")], "'s1' -> 'x/..' leads outside"),
    ([_link("s1", "x/.."), _link("x", ".")], "'s1' -> 'x/..' leads outside"),
    ([_link("a", "b/.."), _link("b", "c/.."), _link("c", ".")], "leads outside"),
    ([_link("c", "."), _link("b", "c/.."), _link("a", "b/..")], "leads outside"),
    ([_link("s1", "x/.."), _link("x", "."), _member("s1/evil.py")], "leads outside"),
    ([_member("d", tarfile.DIRTYPE), _link("d/up", ".."), _link("d/out", "up/..")], "'d/out' -> 'up/..' leads outside"),
    ([_link("x", "."), _link("s1", "x/.."), _member("hard", tarfile.LNKTYPE, linkname="s1/etc")], "leads outside"),
    ([_link("a", "b"), _link("b", "a")], "symlink loop"),
    ([_member("f", data=b"1"), _member("f", data=b"2")], "appears twice"),
    ([_member("f", data=b"1"), _link("f", "/etc/passwd")], "outside|twice"),
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


@pytest.mark.parametrize("order", [1, -1])
def test_link_chains_that_stay_inside_are_accepted_in_either_order(tmp_path, order):
    members = [_member("pkg", tarfile.DIRTYPE), _member("pkg/sub", tarfile.DIRTYPE), _member("pkg/mod.py", data=b"y"),
               _link("up", "pkg/sub/.."), _link("pkg/sub/here", "../sub"), _link("top", "up/mod.py")]
    links, plain = members[3:], members[:3]
    root = safe_extract(_tar(tmp_path / "b.tar.gz", plain + links[::order]), tmp_path / "out")
    assert (root / "top").read_text() == "y" and (root / "up" / "sub" / "here").is_dir()


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


def test_without_tarfiles_data_filter_our_own_checks_still_hold(tmp_path, monkeypatch):
    """Python 3.10/3.11 patch releases before 3.10.12/3.11.4 have no ``filter=``: links are still resolved
    by us, and modes lose setuid and group/other write."""
    monkeypatch.setattr(bundles, "EXTRACT_FILTER", {})
    with pytest.raises(BundleError, match="leads outside"):
        safe_extract(_tar(tmp_path / "evil.tar.gz", [_link("s1", "x/.."), _link("x", ".")]), tmp_path / "out1")
    tool = _member("tool", data=b"#!/bin/sh\n")
    tool[0].mode = 0o6777
    root = safe_extract(_tar(tmp_path / "b.tar.gz", [tool]), tmp_path / "out2")
    assert (root / "tool").stat().st_mode & 0o7777 == 0o755
