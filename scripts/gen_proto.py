"""Regenerate the protobuf/gRPC stubs in src/corolla/proto from proto/ (or --check them).

Usage: python scripts/gen_proto.py [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "src" / "corolla" / "proto"
PACKAGE_DIR = Path("corolla") / "proto"


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    path = scripts / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            sys.exit(f"gen_proto: {name} not found (install the dev extras)")
        path = Path(found)
    return str(path)


def generate(dest: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out={dest}",
        f"--mypy_grpc_out={dest}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("gen_proto: protoc failed")
    for package in [dest / PACKAGE_DIR, *(dest / PACKAGE_DIR).rglob("*")]:
        if package.is_dir():
            (package / "__init__.py").touch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE_DIR
        if check:
            stale = _diff(fresh, OUT)
            if stale:
                print("proto stubs are stale; run ./dev proto. Differing:", *stale, sep="\n  ")
                return 1
            print("proto stubs are up to date")
            return 0
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(fresh, OUT)
        print(f"wrote stubs to {OUT.relative_to(ROOT)}")
    return 0


def _diff(fresh: Path, current: Path) -> list[str]:
    names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    names |= {
        p.relative_to(current)
        for p in current.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    stale = []
    for name in sorted(names):
        a, b = fresh / name, current / name
        if not (a.exists() and b.exists() and filecmp.cmp(a, b, shallow=False)):
            stale.append(str(name))
    return stale


if __name__ == "__main__":
    sys.exit(main())
