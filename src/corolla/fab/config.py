"""Load and validate an app's ``pyproject.toml`` into a typed :class:`AppConfig`."""

from __future__ import annotations

import keyword
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.common.errors import InvalidArgument

ConfigValue = int | float | str | bool
"""A run-config value: TOML scalars only (no lists, dates or tables)."""

PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class FederationConfig:
    """One ``[tool.flwr.federations.<name>]`` table."""

    name: str
    address: str | None = None
    insecure: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FederationsConfig:
    """The ``[tool.flwr.federations]`` table: a default name and the federations by name."""

    default: str | None
    federations: dict[str, FederationConfig]


@dataclass(frozen=True)
class AppConfig:
    """What Corolla needs to know about an app, from its ``pyproject.toml``."""

    name: str
    version: str
    publisher: str
    serverapp: str
    clientapp: str
    run_config: dict[str, ConfigValue]
    federations: FederationsConfig | None = None


def load_app_config(app_dir: Path) -> AppConfig:
    """Read and validate ``app_dir/pyproject.toml``."""
    path = app_dir / PYPROJECT
    if not path.is_file():
        raise InvalidArgument(f"{path}: file not found (an app needs a {PYPROJECT})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_app_config(data, source=str(path))


def parse_app_config(text: str | bytes, *, source: str = PYPROJECT) -> AppConfig:
    """Validate ``pyproject.toml`` content; ``source`` names the file in error messages."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{source}: not valid UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{source}: invalid TOML: {exc}") from exc
    p = _Parser(source)
    project = p.table(doc, "project", required=True)
    name = p.string(project, "project", "name")
    version = p.string(project, "project", "version")
    tool = p.table(doc, "tool", required=True)
    flwr = p.table(tool, "tool.flwr", key="flwr", required=True)
    app = p.table(flwr, "tool.flwr.app", key="app", required=True)
    publisher = p.string(app, "tool.flwr.app", "publisher")
    components = p.table(app, "tool.flwr.app.components", key="components", required=True)
    return AppConfig(
        name=name,
        version=version,
        publisher=publisher,
        serverapp=p.component(components, "serverapp"),
        clientapp=p.component(components, "clientapp"),
        run_config=p.flatten(
            p.table(app, "tool.flwr.app.config", key="config", required=False),
            "tool.flwr.app.config",
        ),
        federations=p.federations(flwr),
    )


class _Parser:
    """Typed accessors that raise :class:`InvalidArgument` naming the key and the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"{self.source}: {message}")

    def table(
        self, parent: dict[str, Any], where: str, *, key: str | None = None, required: bool
    ) -> dict[str, Any]:
        value = parent.get(key or where)
        if value is None:
            if required:
                raise self.fail(f"missing required table [{where}]")
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"[{where}] must be a table, got {type(value).__name__}")
        return value

    def string(self, table: dict[str, Any], where: str, key: str) -> str:
        value = table.get(key)
        if value is None:
            raise self.fail(f"missing required key '{key}' in [{where}]")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"'{key}' in [{where}] must be a non-empty string")
        return value

    def component(self, components: dict[str, Any], key: str) -> str:
        value = self.string(components, "tool.flwr.app.components", key)
        if not is_valid_component_ref(value):
            raise self.fail(
                f"'{key}' in [tool.flwr.app.components] must look like "
                f"'module.path:attribute', got {value!r}"
            )
        return value

    def flatten(self, table: dict[str, Any], where: str) -> dict[str, ConfigValue]:
        out: dict[str, ConfigValue] = {}
        for key, value in table.items():
            dotted = f"{where}.{key}"
            if isinstance(value, dict):
                for sub_key, sub_value in self.flatten(value, dotted).items():
                    self._put(out, f"{key}.{sub_key}", sub_value, where)
            elif isinstance(value, bool | int | float | str):
                self._put(out, key, value, where)
            else:
                raise self.fail(
                    f"'{dotted}' must be an int, float, str or bool, got {type(value).__name__}"
                )
        return out

    def _put(self, out: dict[str, ConfigValue], key: str, value: ConfigValue, where: str) -> None:
        if key in out:
            raise self.fail(f"duplicate run-config key '{key}' in [{where}]")
        out[key] = value

    def federations(self, flwr: dict[str, Any]) -> FederationsConfig | None:
        where = "tool.flwr.federations"
        table = self.table(flwr, where, key="federations", required=False)
        if not table:
            return None
        default = table.get("default")
        if default is not None and not isinstance(default, str):
            raise self.fail(f"'default' in [{where}] must be a string")
        feds: dict[str, FederationConfig] = {}
        for name, value in table.items():
            if name == "default":
                continue
            if not isinstance(value, dict):
                raise self.fail(f"[{where}.{name}] must be a table")
            feds[name] = self._federation(name, value)
        if default is not None and default not in feds:
            raise self.fail(f"'default' in [{where}] names unknown federation {default!r}")
        return FederationsConfig(default=default, federations=feds)

    def _federation(self, name: str, table: dict[str, Any]) -> FederationConfig:
        where = f"tool.flwr.federations.{name}"
        options = dict(table)
        address = options.pop("address", None)
        if address is not None and (not isinstance(address, str) or not address):
            raise self.fail(f"'address' in [{where}] must be a non-empty string")
        insecure = options.pop("insecure", False)
        if not isinstance(insecure, bool):
            raise self.fail(f"'insecure' in [{where}] must be true or false")
        return FederationConfig(name=name, address=address, insecure=insecure, options=options)


def is_valid_component_ref(ref: str) -> bool:
    """Whether ``ref`` has the form ``module.path:attribute`` (dotted identifiers)."""
    module, sep, attribute = ref.partition(":")
    return bool(sep) and _is_dotted_name(module) and _is_dotted_name(attribute)


def _is_dotted_name(text: str) -> bool:
    parts = text.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)
