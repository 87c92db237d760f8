"""Tests for verifying, unpacking and installing FABs, including hostile archives."""

from __future__ import annotations

import hashlib
import io
import json
import random
import stat
import struct
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corolla.common.errors import AlreadyExists, InvalidArgument
from corolla.fab import FabLimits, InstalledApp, build_fab, install_fab, unpack_fab, verify_fab

MiB = 1024 * 1024
PYPROJECT = b"""
[project]
name = "demo"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "pkg.server_app:app"
clientapp = "pkg.client_app:app"
"""
APP = {"pyproject.toml": PYPROJECT, "pkg/server_app.py": b"app = 1\n"}
BIG = random.Random(0).randbytes(MiB)  # 1 MiB that does not compress
Member = tuple[str | zipfile.ZipInfo, bytes]


def info(name: str, mode: int = stat.S_IFREG | 0o644, **attrs: Any) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.external_attr = mode << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    for key, value in attrs.items():
        setattr(zi, key, value)
    return zi


def manifest(files: dict[str, bytes]) -> bytes:
    entries = [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for p, d in sorted(files.items())
    ]
    return json.dumps({"version": 1, "files": entries}).encode()


def craft(
    members: list[Member] | None = None,
    *,
    base: dict[str, bytes] | None = None,
    listed: dict[str, bytes] | None = None,
    with_manifest: bool = True,
) -> bytes:
    """A zip of ``base`` (default: a valid app) plus ``members``, with a manifest.

    The manifest lists ``listed`` if given, else every file member, so that each test's
    archive is valid except for the one defect it is about.
    """
    files = dict(APP if base is None else base)
    all_members: list[Member] = [*files.items(), *(members or [])]
    if listed is None:
        listed = {}
        for name, data in all_members:
            key = name if isinstance(name, str) else name.filename
            if not key.endswith("/"):
                listed[key] = data
    if with_manifest:
        all_members.insert(0, (".corolla/manifest.json", manifest(listed)))
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        for name, data in all_members:
            zf.writestr(info(name) if isinstance(name, str) else name, data)
    return buf.getvalue()


def patch_header(data: bytes, name: str, *, file_size: int | None = None, flags: int = 0) -> bytes:
    """Rewrite ``name``'s local and central headers: declared size, extra flag bits."""
    out = bytearray(data)

    def apply(flags_at: int, size_at: int) -> None:
        (old,) = struct.unpack_from("<H", out, flags_at)
        struct.pack_into("<H", out, flags_at, old | flags)
        if file_size is not None:
            struct.pack_into("<I", out, size_at, file_size)

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        local = zf.getinfo(name).header_offset
    apply(local + 6, local + 22)
    eocd = data.rfind(b"PK\x05\x06")
    (pos,) = struct.unpack_from("<I", data, eocd + 16)
    while data[pos : pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + n].decode() == name:
            apply(pos + 8, pos + 24)
        pos += 46 + n + m + k
    return bytes(out)


def assert_clean(root: Path) -> None:
    """Nothing, not even a temp dir, was left behind."""
    assert not root.exists() or list(root.iterdir()) == []


def test_round_trip(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "pkg" / "sub").mkdir(parents=True)
    (app / "pyproject.toml").write_bytes(PYPROJECT)
    (app / "pkg" / "server_app.py").write_text("app = 1\n")
    (app / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 50)
    fab = build_fab(app)
    dest = tmp_path / "apps" / "x"
    config = unpack_fab(fab.data, dest)
    assert config == fab.config
    for rel in ["pyproject.toml", "pkg/server_app.py", "pkg/sub/data.bin"]:
        assert (dest / rel).read_bytes() == (app / rel).read_bytes()
    assert (dest / ".corolla" / "manifest.json").is_file()
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["x"]


def test_directory_entries_are_tolerated(tmp_path: Path) -> None:
    data = craft([(info("pkg/", stat.S_IFDIR | 0o755), b""), (info("docs/"), b"")])
    unpack_fab(data, tmp_path / "d")
    assert (tmp_path / "d" / "pkg" / "server_app.py").is_file()


def test_verify_fab() -> None:
    data = craft()
    digest = hashlib.sha256(data).hexdigest()
    verify_fab(data, digest)
    verify_fab(data, digest.upper())
    with pytest.raises(InvalidArgument, match="hash mismatch"):
        verify_fab(data + b"x", digest)
    with pytest.raises(InvalidArgument, match="invalid FAB hash"):
        verify_fab(data, "../../etc")


def _symlink() -> list[Member]:
    return [(info("link", stat.S_IFLNK | 0o777), b"/etc/passwd")]


def _zeros(n: int) -> list[Member]:
    return [("zeros.bin", bytes(n))]


HOSTILE: dict[str, tuple[bytes, str]] = {
    "not a zip": (b"PK\x03\x04 definitely not a zip", "not a zip archive"),
    "empty": (b"", "not a zip archive"),
    "absolute path": (craft([("/etc/evil", b"x")]), "absolute"),
    "dotdot": (craft([("../evil", b"x")]), r"'\.\.' component"),
    "nested dotdot": (craft([("pkg/../../evil", b"x")]), r"'\.\.' component"),
    "backslash": (craft([("..\\evil", b"x")]), "backslash"),
    "drive letter": (craft([("C:/evil", b"x")]), "drive letter"),
    "dot component": (craft([("pkg/./x", b"x")]), "'.' path component"),
    "empty component": (craft([("pkg//x", b"x")]), "empty"),
    "control char": (craft([("a\nb", b"x")]), "control character"),
    "symlink": (craft(_symlink()), "symbolic link"),
    "fifo": (craft([(info("f", stat.S_IFIFO | 0o644), b"")]), "not a regular file"),
    "duplicate": (craft([("pkg/server_app.py", b"evil = 1\n")]), "duplicate name"),
    "case duplicate": (craft([("PKG/server_app.py", b"x")]), "duplicate name"),
    "file vs dir": (craft([("pkg", b"x")]), "both file and directory"),
    "file vs dir entry": (craft([(info("x/"), b""), ("x", b"")]), "duplicate name"),
    "encrypted": (patch_header(craft([("e", b"x")]), "e", flags=0x1), "encrypted"),
    "bzip2": (craft([(info("b", compress_type=zipfile.ZIP_BZIP2), b"x")]), "compression method"),
    "zip bomb (ratio)": (craft(_zeros(5 * MiB)), "compression ratio over 200"),
    "lying size (small)": (
        patch_header(craft(_zeros(5 * MiB)), "zeros.bin", file_size=1000),
        "corrupt",
    ),
    "lying size (large)": (
        patch_header(craft([("x.bin", b"abc" * 100)]), "x.bin", file_size=5000),
        "fewer bytes than its header declares",
    ),
    "no manifest": (craft(with_manifest=False), "manifest .* is missing"),
    "bad manifest": (craft([(".corolla/manifest.json", b"{")], with_manifest=False), "JSON"),
    "unlisted member": (craft([("extra.py", b"x")], listed=dict(APP)), "not in the manifest"),
    "listed but absent": (
        craft(listed={**APP, "gone.py": b""}),
        "listed in the manifest but absent",
    ),
    "tampered member": (
        craft(base={**APP, "pkg/server_app.py": b"evil = 1\n"}, listed=APP),
        "does not match the manifest",
    ),
    "no pyproject": (craft(base={"pkg/m.py": b""}), "pyproject.toml is missing"),
    "bad pyproject": (
        craft(base={"pyproject.toml": b"[project]\nname = 'x'\n"}),
        "FAB pyproject.toml: .*'version'",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path: Path, case: str) -> None:
    data, fragment = HOSTILE[case]
    root = tmp_path / "apps"
    with pytest.raises(InvalidArgument, match=fragment) as exc_info:
        unpack_fab(data, root / "app")
    assert "\n" not in str(exc_info.value)
    assert_clean(root)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["apps"])


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"max_entries": 3}, "6 entries, more than the limit of 3"),
        ({"max_unpacked_bytes": 300}, "unpacks to more than the limit of 300 bytes"),
        ({"max_ratio": 2}, "compression ratio over 2"),
        ({"max_fab_bytes": 1000}, r"FAB is 3\.\d KiB \(\d+ bytes\), more than the limit of 1000"),
    ],
)
def test_limits_are_enforced(tmp_path: Path, limits: dict[str, int], fragment: str) -> None:
    data = craft([("a.txt", b"a" * 200), ("b.txt", b"b" * 200), ("c.bin", bytes(2 * MiB))])
    with pytest.raises(InvalidArgument, match=fragment):
        unpack_fab(data, tmp_path / "apps" / "app", limits=FabLimits(**limits))
    assert_clean(tmp_path / "apps")


def test_decompressed_bytes_are_counted_even_if_the_reader_trusts_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that did not stop at the declared size still cannot write past it."""
    data = craft([("small.bin", b"x" * 10)])
    real_open = zipfile.ZipFile.open

    def lying_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(name, "filename", name) == "small.bin":
            return io.BytesIO(bytes(3 * MiB))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(InvalidArgument, match="more bytes than its header declares"):
        unpack_fab(data, tmp_path / "apps" / "app")
    assert_clean(tmp_path / "apps")


def test_unpack_refuses_an_existing_destination(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    dest.mkdir()
    unpack_fab(craft(), dest)  # an empty directory is fine
    with pytest.raises(AlreadyExists):
        unpack_fab(craft(), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


def test_install_is_idempotent(tmp_path: Path) -> None:
    data = craft()
    fab_hash = hashlib.sha256(data).hexdigest()
    first = install_fab(data, fab_hash, tmp_path)
    assert first.path == tmp_path / fab_hash
    assert first.config.name == "demo"
    marker = first.path / "pkg" / "server_app.py"
    inode = marker.stat().st_ino
    second = install_fab(data, fab_hash.upper(), tmp_path)
    assert second == first
    assert marker.stat().st_ino == inode  # reused, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [fab_hash]


def test_install_repairs_an_incomplete_install(tmp_path: Path) -> None:
    data = craft()
    fab_hash = hashlib.sha256(data).hexdigest()
    installed = install_fab(data, fab_hash, tmp_path)
    (installed.path / "pkg" / "server_app.py").unlink()
    again = install_fab(data, fab_hash, tmp_path)
    assert (again.path / "pkg" / "server_app.py").read_bytes() == APP["pkg/server_app.py"]
    assert [p.name for p in tmp_path.iterdir()] == [fab_hash]


def test_install_refuses_a_hash_mismatch(tmp_path: Path) -> None:
    data = craft()
    with pytest.raises(InvalidArgument, match="hash mismatch"):
        install_fab(data, hashlib.sha256(b"other").hexdigest(), tmp_path / "apps")
    with pytest.raises(InvalidArgument, match="invalid FAB hash"):
        install_fab(data, "../escape", tmp_path / "apps")
    assert_clean(tmp_path / "apps")


def test_install_refuses_a_hostile_fab_with_the_right_hash(tmp_path: Path) -> None:
    data = HOSTILE["dotdot"][0]
    with pytest.raises(InvalidArgument):
        install_fab(data, hashlib.sha256(data).hexdigest(), tmp_path / "apps")
    assert_clean(tmp_path / "apps")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["apps"])


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_installs_of_one_hash(tmp_path: Path, round_: int) -> None:
    data = craft([("big.bin", BIG)])
    fab_hash = hashlib.sha256(data).hexdigest()
    barrier = threading.Barrier(6)
    results: list[InstalledApp] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(install_fab(data, fab_hash, tmp_path))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 6
    assert {r.path for r in results} == {tmp_path / fab_hash}
    assert [p.name for p in tmp_path.iterdir()] == [fab_hash]  # no temp dirs left
    assert (tmp_path / fab_hash / "big.bin").read_bytes() == BIG


_part = st.text(alphabet="abcxyz0189_-", min_size=1, max_size=8)
_paths = st.lists(_part, min_size=1, max_size=3).map("/".join)
_trees = st.dictionaries(_paths, st.binary(max_size=2000), min_size=1, max_size=8).filter(
    lambda tree: not any(other.startswith(path + "/") for path in tree for other in tree)
)


@settings(max_examples=40, deadline=None)
@given(_trees)
def test_any_tree_round_trips_through_build_and_unpack(tree: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        (app / "pyproject.toml").write_bytes(PYPROJECT)
        for rel, content in tree.items():
            (app / rel).parent.mkdir(parents=True, exist_ok=True)
            (app / rel).write_bytes(content)
        fab = build_fab(app)
        assert build_fab(app).data == fab.data
        installed = install_fab(fab.data, fab.fab_hash, Path(tmp) / "apps")
        for rel, content in tree.items():
            assert (installed.path / rel).read_bytes() == content
        unpacked = {
            p.relative_to(installed.path).as_posix()
            for p in installed.path.rglob("*")
            if p.is_file()
        }
        corolla_files = {".corolla/manifest.json", ".corolla/installed.json", ".corolla/lock"}
        assert unpacked == {*tree, "pyproject.toml", *corolla_files}
