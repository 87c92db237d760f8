"""Tests for building a deterministic FAB from an app directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from corolla.common.errors import InvalidArgument
from corolla.fab import build_fab, build_fab_bytes

PYPROJECT = """
[project]
name = "My App"
version = "1.0.0"

[tool.flwr.app]
publisher = "ACME Corp"

[tool.flwr.app.components]
serverapp = "pkg.server_app:app"
clientapp = "pkg.client_app:app"
"""


def write_app(root: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """An app dir with a pyproject, a small package and ``files`` (relative path -> content)."""
    tree: dict[str, str | bytes] = {
        "pyproject.toml": PYPROJECT,
        "pkg/__init__.py": "",
        "pkg/server_app.py": "app = 'server'\n",
        "pkg/client_app.py": "app = 'client'\n",
        **(files or {}),
    }
    for rel, content in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.namelist()


def test_archive_layout_is_fixed(tmp_path: Path) -> None:
    fab = build_fab(write_app(tmp_path / "app"))
    assert fab.path is None
    assert fab.fab_hash == hashlib.sha256(fab.data).hexdigest()
    assert fab.config.publisher == "ACME Corp"
    with zipfile.ZipFile(io.BytesIO(fab.data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [
            ".corolla/manifest.json",
            "pkg/__init__.py",
            "pkg/client_app.py",
            "pkg/server_app.py",
            "pyproject.toml",
        ]
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == stat.S_IFREG | 0o644
            assert info.compress_type == zipfile.ZIP_DEFLATED
        manifest = json.loads(zf.read(".corolla/manifest.json"))
        assert manifest["version"] == 1
        assert [f["path"] for f in manifest["files"]] == [i.filename for i in infos[1:]]
        for entry in manifest["files"]:
            content = zf.read(entry["path"])
            assert entry["size"] == len(content)
            assert entry["sha256"] == hashlib.sha256(content).hexdigest()


def test_build_is_deterministic_across_mtimes_modes_and_locations(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"data/x.bin": bytes(range(256)) * 100})
    first = build_fab(app)
    assert build_fab(app).data == first.data
    for i, path in enumerate(sorted(app.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000_000 + i))
        if path.is_file():
            path.chmod(0o600 if i % 2 else 0o755)
    assert build_fab(app).fab_hash == first.fab_hash
    moved = shutil.copytree(app, tmp_path / "elsewhere" / "other-name")
    assert build_fab(moved).data == first.data


def test_content_change_changes_the_hash(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    before = build_fab(app).fab_hash
    (app / "pkg" / "server_app.py").write_text("app = 'changed'\n")
    assert build_fab(app).fab_hash != before


def test_writes_a_normalized_file_name(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    out = tmp_path / "out" / "nested"
    fab = build_fab(app, out)
    assert fab.path == out / f"acme-corp.my-app.1.0.0.{fab.fab_hash[:8]}.fab"
    assert fab.path.read_bytes() == fab.data
    assert os.listdir(out) == [fab.path.name]  # no temp file left
    assert build_fab_bytes(app) == (fab.data, fab.fab_hash)


def test_output_inside_the_app_does_not_change_the_next_build(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    first = build_fab(app, app)
    assert build_fab(app, app).fab_hash == first.fab_hash


def test_gitignore_is_honoured(tmp_path: Path) -> None:
    app = write_app(
        tmp_path / "app",
        {
            ".gitignore": "*.log\n!keep.log\nsecret/\n/top-only.txt\n# comment\n",
            "a.log": "x",
            "keep.log": "x",
            "secret/key.txt": "x",
            "top-only.txt": "x",
            "pkg/top-only.txt": "x",
            "pkg/.gitignore": "*.csv\n",
            "pkg/data.csv": "x",
            "data.csv": "x",
            "pkg/sub/.gitignore": "!data.csv\n",
            "pkg/sub/data.csv": "x",
        },
    )
    assert names(build_fab(app).data)[1:] == [
        ".gitignore",
        "data.csv",
        "keep.log",
        "pkg/.gitignore",
        "pkg/__init__.py",
        "pkg/client_app.py",
        "pkg/server_app.py",
        "pkg/sub/.gitignore",
        "pkg/sub/data.csv",
        "pkg/top-only.txt",
        "pyproject.toml",
    ]


def test_pyproject_is_shipped_even_if_ignored(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {".gitignore": "*.toml\n"})
    assert "pyproject.toml" in names(build_fab(app).data)


def test_excluded_paths_are_skipped(tmp_path: Path) -> None:
    junk = [
        ".venv/lib/x.py",
        "venv/lib/x.py",
        "pkg/__pycache__/m.cpython-311.pyc",
        "pkg/stale.pyc",
        ".git/HEAD",
        "build/lib/x.py",
        "dist/x.whl",
        "my_app.egg-info/PKG-INFO",
        "old.fab",
        ".DS_Store",
        "pkg/.DS_Store",
        ".corolla/manifest.json",
        "src/my_app.egg-info/PKG-INFO",
    ]
    app = write_app(tmp_path / "app", {**dict.fromkeys(junk, "junk"), "pkg/build/x.py": ""})
    assert names(build_fab(app).data)[1:] == [
        "pkg/__init__.py",
        "pkg/build/x.py",
        "pkg/client_app.py",
        "pkg/server_app.py",
        "pyproject.toml",
    ]


def test_symlinks_are_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    app = write_app(tmp_path / "app")
    (app / "link.txt").symlink_to(outside / "secret.txt")
    (app / "linkdir").symlink_to(outside, target_is_directory=True)
    built = names(build_fab(app).data)
    assert not any("link" in name or "secret" in name for name in built)


def test_per_file_size_cap(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"big.bin": b"x" * 1001})
    with pytest.raises(InvalidArgument, match=r"big\.bin: file exceeds the 1000-byte"):
        build_fab(app, max_file_size=1000)
    assert "big.bin" in names(build_fab(app, max_file_size=1001).data)


def test_total_size_cap(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {f"d/{i}.bin": os.urandom(400) for i in range(5)})
    size = sum(p.stat().st_size for p in app.rglob("*") if p.is_file())
    with pytest.raises(InvalidArgument, match="total limit"):
        build_fab(app, max_total_size=size - 1)
    build_fab(app, max_total_size=size)


def test_missing_or_invalid_pyproject(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    with pytest.raises(InvalidArgument, match=r"pyproject\.toml: file not found"):
        build_fab(app)
    (app / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(InvalidArgument, match="'version' in \\[project\\]"):
        build_fab(app)
    with pytest.raises(InvalidArgument, match="not a directory"):
        build_fab(tmp_path / "nope")


def test_nothing_written_on_failure(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {"big.bin": b"x" * 100})
    with pytest.raises(InvalidArgument):
        build_fab(app, tmp_path / "out", max_file_size=10)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"pkg/A.py": "", "pkg/a.py": ""}, "duplicate name"),
        ({"back\\slash.py": ""}, "backslash"),
        ({"new\nline.py": ""}, "control character"),
        ({"zeros.bin": bytes(2 * 1024 * 1024)}, "compression ratio"),
    ],
)
def test_refuses_what_install_would_refuse(
    tmp_path: Path, files: dict[str, str | bytes], fragment: str
) -> None:
    app = write_app(tmp_path / "app", files)
    with pytest.raises(InvalidArgument, match=fragment):
        build_fab(app)
