"""What `flwr` reads from the app and the command line: run-config overrides and the federation.

``--run-config`` takes space-separated ``key=value`` pairs whose values are TOML values
(``lr=0.1 name='a b' flag=true``), or the path of a ``.toml`` file. Both may repeat; later
values win. Every key must be one of the app's ``[tool.flwr.app.config]`` defaults and keep its
type (an int is accepted, and converted, where the default is a float).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.common.errors import InvalidArgument
from corolla.common.kvpairs import split_pairs
from corolla.common.tls import ClientTls
from corolla.fab import AppConfig, ConfigValue
from corolla.fab.config import PYPROJECT

ROOT_CERTIFICATES_OPTION = "root-certificates"
CLIENT_CERTIFICATE_OPTION = "client-certificate"  # mutual TLS: the CLI's own certificate
CLIENT_KEY_OPTION = "client-key"


# -- run config ---------------------------------------------------------------------------------


def parse_run_config(values: Iterable[str]) -> dict[str, ConfigValue]:
    """Merge every ``--run-config`` value (pairs or a ``.toml`` path) into one flat dict."""
    merged: dict[str, ConfigValue] = {}
    for value in values:
        text = value.strip()
        if text.endswith(".toml") and "=" not in text:
            merged.update(_load_toml_file(Path(text)))
        else:
            merged.update(parse_pairs(text))
    return merged


def parse_pairs(text: str) -> dict[str, ConfigValue]:
    """``"a=1 b.c='x y'"`` -> ``{"a": 1, "b.c": "x y"}``."""
    out: dict[str, ConfigValue] = {}
    for pair in split_pairs(text):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InvalidArgument(f"--run-config: expected key=value, got {pair!r}")
        if not value:
            raise InvalidArgument(f"--run-config: no value for {key!r}")
        try:
            doc = tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError:
            raise InvalidArgument(
                f"--run-config: {pair!r} is not a valid TOML key=value pair "
                f"(quote strings, e.g. {key}='{value}')"
            ) from None
        out.update(flatten(doc, where="--run-config"))
    return out


def flatten(table: Mapping[str, Any], *, where: str, prefix: str = "") -> dict[str, ConfigValue]:
    """Nested tables become dotted keys; only int, float, str and bool values are allowed."""
    out: dict[str, ConfigValue] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, where=where, prefix=f"{dotted}."))
        elif isinstance(value, bool | int | float | str):
            out[dotted] = value
        else:
            raise InvalidArgument(
                f"{where}: {dotted!r} must be an int, float, str or bool, "
                f"got {type(value).__name__}"
            )
    return out


def _load_toml_file(path: Path) -> dict[str, ConfigValue]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"--run-config: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"--run-config: {path}: invalid TOML: {exc}") from exc
    return flatten(doc, where=str(path))


def check_overrides(
    overrides: Mapping[str, ConfigValue], defaults: Mapping[str, ConfigValue]
) -> dict[str, ConfigValue]:
    """Overrides checked against the app's defaults: known keys, same types (int -> float ok)."""
    checked: dict[str, ConfigValue] = {}
    for key, value in overrides.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none: the app has no [tool.flwr.app.config]"
            raise InvalidArgument(f"unknown run-config key {key!r} (known keys: {known})")
        checked[key] = _coerce(key, value, defaults[key])
    return checked


def _coerce(key: str, value: ConfigValue, default: ConfigValue) -> ConfigValue:
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if type(value) is type(default):
        return value
    raise InvalidArgument(
        f"run-config key {key!r} expects {type(default).__name__} like its default "
        f"{default!r}, got {type(value).__name__} {value!r}"
    )


# -- federations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Federation:
    """Where and how to reach the SuperLink's Exec API for one named federation."""

    name: str
    address: str
    insecure: bool
    root_certificates: bytes | None = None
    options: dict[str, ConfigValue] = field(default_factory=dict)
    client_tls: ClientTls | None = field(default=None, repr=False)


def resolve_federation(config: AppConfig, name: str | None, app_dir: Path) -> Federation:
    """The federation called ``name``, else the default one of ``[tool.flwr.federations]``."""
    source = app_dir / PYPROJECT
    feds = config.federations
    if feds is None or not feds.federations:
        raise InvalidArgument(
            f"{source}: no federations defined; add e.g. [tool.flwr.federations.local] "
            'with address = "127.0.0.1:9093" and insecure = true'
        )
    available = ", ".join(sorted(feds.federations))
    if name is None:
        if feds.default is None:
            raise InvalidArgument(
                f"no federation given and {source} sets no 'default' in "
                f"[tool.flwr.federations] (available: {available})"
            )
        name = feds.default
    fed = feds.federations.get(name)
    if fed is None:
        raise InvalidArgument(f"unknown federation {name!r} in {source} (available: {available})")
    if fed.address is None:
        raise InvalidArgument(
            f"federation {name!r} in {source} has no 'address' of a SuperLink Exec API"
        )
    options = dict(fed.options)
    cert_path = options.pop(ROOT_CERTIFICATES_OPTION, None)
    root_certificates = _read_root_certificates(fed.insecure, cert_path, app_dir, name)
    client_tls = _read_client_tls(
        fed.insecure,
        options.pop(CLIENT_CERTIFICATE_OPTION, None),
        options.pop(CLIENT_KEY_OPTION, None),
        app_dir,
        name,
    )
    return Federation(
        name=name,
        address=fed.address,
        insecure=fed.insecure,
        root_certificates=root_certificates,
        options=flatten(options, where=f"[tool.flwr.federations.{name}]"),
        client_tls=client_tls,
    )


def _read_client_tls(
    insecure: bool, cert_path: object, key_path: object, app_dir: Path, name: str
) -> ClientTls | None:
    """The CLI's client certificate and key (paths relative to the app directory)."""
    if cert_path is None and key_path is None:
        return None
    where = f"federation {name!r}"
    cert, key = CLIENT_CERTIFICATE_OPTION, CLIENT_KEY_OPTION
    if insecure:
        raise InvalidArgument(f"{where}: 'insecure = true' and '{cert}'/'{key}' conflict")
    if not (isinstance(cert_path, str) and cert_path and isinstance(key_path, str) and key_path):
        raise InvalidArgument(f"{where}: '{cert}' and '{key}' must both be file paths")
    try:
        return ClientTls.from_files(app_dir / cert_path, app_dir / key_path)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc}") from exc


def _read_root_certificates(
    insecure: bool, cert_path: object, app_dir: Path, name: str
) -> bytes | None:
    if cert_path is None:
        return None
    where = f"federation {name!r}"
    if insecure:
        raise InvalidArgument(
            f"{where}: 'insecure = true' and '{ROOT_CERTIFICATES_OPTION}' conflict"
        )
    if not isinstance(cert_path, str) or not cert_path:
        raise InvalidArgument(f"{where}: '{ROOT_CERTIFICATES_OPTION}' must be a file path")
    path = app_dir / cert_path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
