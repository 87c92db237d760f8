"""`flwr new`: scaffold a working app from a built-in template (no network)."""

from __future__ import annotations

import getpass
import keyword
import re
import shutil
import sys
from enum import StrEnum
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template
from typing import Annotated

import typer

from corolla.common.errors import AlreadyExists, InvalidArgument

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")
_PUBLISHER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED = frozenset({"corolla", "flwr", "numpy"})
_SUFFIX = ".tmpl"
_RENAMES = {"gitignore": ".gitignore"}


class Framework(StrEnum):
    NUMPY = "numpy"


def new(
    app_name: Annotated[
        str | None,
        typer.Argument(
            metavar="APP_NAME",
            help="Name of the app and of its directory, e.g. my-app.",
            show_default=False,
        ),
    ] = None,
    framework: Annotated[
        Framework, typer.Option("--framework", help="Template to start from.")
    ] = Framework.NUMPY,
    publisher: Annotated[
        str | None,
        typer.Option(
            "--publisher",
            help="Publisher of the app (default: your user name).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a new app in ./APP_NAME from a built-in template."""
    if app_name is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("missing APP_NAME (e.g. flwr new my-app)")
        app_name = str(typer.prompt("App name"))
    name = validate_app_name(app_name)
    target = Path.cwd() / name
    create_app(target, name=name, publisher=publisher or default_publisher(), framework=framework)
    print(f"Created the {framework} app {name!r} in {target}")
    print(f"Next:\n  cd {name}\n  flwr run . --stream")


def validate_app_name(app_name: str) -> str:
    """Lowercased ``app_name`` if it makes a valid project and package name."""
    name = app_name.strip().lower()
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid app name {app_name!r}: use a letter, then letters, digits, '-' or '_'"
        )
    package = package_name(name)
    if keyword.iskeyword(package):
        raise InvalidArgument(f"invalid app name {app_name!r}: {package!r} is a Python keyword")
    if package in _RESERVED or package in sys.stdlib_module_names:
        raise InvalidArgument(
            f"invalid app name {app_name!r}: its package would shadow the module {package!r}"
        )
    return name


def package_name(name: str) -> str:
    return name.replace("-", "_")


def default_publisher() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return "corolla"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-._") or "corolla"


def create_app(target: Path, *, name: str, publisher: str, framework: Framework) -> None:
    """Render the ``framework`` template into ``target`` (absent or empty), all or nothing."""
    if not _PUBLISHER_RE.fullmatch(publisher):
        raise InvalidArgument(
            f"invalid publisher {publisher!r}: use letters, digits, '-', '_' or '.'"
        )
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise AlreadyExists(f"{target} exists and is not empty")
    values = {"name": name, "package": package_name(name), "publisher": publisher}
    template = files("corolla.cli").joinpath("templates", framework.value)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        _render(template, target, values)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise


def _render(source: Traversable, dest: Path, values: dict[str, str]) -> None:
    for entry in source.iterdir():
        if entry.is_dir():
            sub = dest / (values["package"] if entry.name == "package" else entry.name)
            sub.mkdir()
            _render(entry, sub, values)
        elif entry.name.endswith(_SUFFIX):
            stem = entry.name.removesuffix(_SUFFIX)
            text = Template(entry.read_text(encoding="utf-8")).substitute(values)
            (dest / _RENAMES.get(stem, stem)).write_text(text, encoding="utf-8")
