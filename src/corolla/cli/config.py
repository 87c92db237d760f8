"""What `flwr` reads from the app and the command line: run-config overrides and the federation.

The federation comes from the app's ``[tool.flwr.federations]``, the user config
(`corolla.cli.userconfig`) or the built-in ``local-simulation``: see `resolve_federation` and
docs/federations.md.

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

from corolla.cli.userconfig import LOCAL_SIMULATION, UserConfig, load_user_config
from corolla.common.errors import InvalidArgument
from corolla.common.kvpairs import split_pairs
from corolla.common.tls import ClientTls
from corolla.fab import AppConfig, ConfigValue, FederationConfig
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

NUM_SUPERNODES_OPTION = "options.num-supernodes"
DEFAULT_NUM_SUPERNODES = 10  # the nodes of the built-in local-simulation
BUILT_IN = "built in"  # the `Federation.source` of local-simulation
_PATH_OPTIONS = (ROOT_CERTIFICATES_OPTION, CLIENT_CERTIFICATE_OPTION, CLIENT_KEY_OPTION)


@dataclass(frozen=True)
class Federation:
    """One named federation, resolved: a SuperLink's Exec API, or a local simulation.

    Deployed: ``address`` is set and ``num_supernodes`` is None. Simulation: ``num_supernodes``
    (>= 1) is set, ``address`` is "" and there are no TLS settings. Code that dials a SuperLink
    takes the address from `require_address`, which refuses a simulation with a clear message.
    ``options`` are the other settings, with dotted keys (``options.backend.x``); ``source``
    says where the federation was defined (a file, or "built in").
    """

    name: str
    address: str
    insecure: bool
    root_certificates: bytes | None = None
    options: dict[str, ConfigValue] = field(default_factory=dict)
    client_tls: ClientTls | None = field(default=None, repr=False)
    num_supernodes: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.num_supernodes is None:
            if not self.address:
                raise ValueError(f"federation {self.name!r}: needs an address or num_supernodes")
            return
        tls = self.insecure or self.root_certificates is not None or self.client_tls is not None
        if self.address or self.num_supernodes < 1 or tls:
            raise ValueError(
                f"federation {self.name!r}: a simulation has num_supernodes >= 1, "
                "no address and no TLS settings"
            )

    @property
    def is_simulation(self) -> bool:
        return self.num_supernodes is not None

    def require_address(self, purpose: str = "this command") -> str:
        """The SuperLink address; a simulation has none, and ``purpose`` says who needed it."""
        if self.num_supernodes is not None:
            raise InvalidArgument(
                f"federation {self.name!r} is a simulation ({NUM_SUPERNODES_OPTION} = "
                f"{self.num_supernodes}); {purpose} needs a federation with an 'address' "
                "(a SuperLink Exec API)"
            )
        return self.address


def resolve_federation(
    config: AppConfig, name: str | None, app_dir: Path, *, user_config_file: Path | None = None
) -> Federation:
    """The federation to use for the app in ``app_dir`` (docs/federations.md).

    The name: ``name``, else the app's ``[tool.flwr.federations] default``, else the user
    config's ``[superlink] default``, else ``local-simulation``. It is looked up in the app's
    pyproject, then in the user config (``user_config_file``, default `user_config_path()`, read
    only when needed), then among the built-ins."""
    pyproject = app_dir / PYPROJECT
    app_feds = config.federations.federations if config.federations else {}
    user: UserConfig | None = None
    if name is None and config.federations is not None:
        name = config.federations.default
    if name is None:
        user = load_user_config(user_config_file)
        name = user.default_name
    fed = app_feds.get(name)
    if fed is not None:
        return _build(
            fed, base_dir=app_dir, source=pyproject, table="tool.flwr.federations", strict=False
        )
    if user is None:
        user = load_user_config(user_config_file)
    return _from_user_config(user, name, app=(pyproject, sorted(app_feds)))


def resolve_user_federation(
    name: str | None, *, user_config_file: Path | None = None
) -> Federation:
    """The federation ``name`` (else the user default, else ``local-simulation``) without an
    app: from the user config, else built in (for `flwr ls/log/stop` outside an app)."""
    return _from_user_config(load_user_config(user_config_file), name, app=None)


def _from_user_config(
    user: UserConfig, name: str | None, *, app: tuple[Path, list[str]] | None
) -> Federation:
    name = user.default_name if name is None else name
    fed = user.federations.get(name)
    if fed is not None:
        return _build(
            fed, base_dir=user.path.parent, source=user.path, table="superlink", strict=True
        )
    if name == LOCAL_SIMULATION:
        return Federation(
            name=name,
            address="",
            insecure=False,
            num_supernodes=DEFAULT_NUM_SUPERNODES,
            source=BUILT_IN,
        )
    looked = [f"not in {app[0]} (available: {', '.join(app[1]) or 'none'})"] if app else []
    if user.exists:
        looked.append(
            f"not in {user.path} (available: {', '.join(sorted(user.federations)) or 'none'})"
        )
    else:
        looked.append(f"not in {user.path} (no such file)")
    raise InvalidArgument(
        f"unknown federation {name!r}: {', '.join(looked)}, "
        f"and not built in (only {LOCAL_SIMULATION!r} is)"
    )


def _build(
    fed: FederationConfig, *, base_dir: Path, source: Path, table: str, strict: bool
) -> Federation:
    """``fed`` checked and its files read (relative to ``base_dir``). ``strict`` (the user
    config): an address with options.num-supernodes is an error; a pyproject may still have
    both (the federation is deployed, and the option goes to the SuperLink as before)."""
    name, where = fed.name, f"federation {fed.name!r} in {source}"
    options = dict(fed.options)
    paths = {key: options.pop(key, None) for key in _PATH_OPTIONS}
    flat = flatten(options, where=f"{source} [{table}.{name}]")
    num = flat.pop(NUM_SUPERNODES_OPTION, None) if fed.address is None or strict else None
    if fed.address is None:
        if num is None:
            raise InvalidArgument(
                f"{where} has no 'address' (a SuperLink Exec API) and no "
                f"'{NUM_SUPERNODES_OPTION}' (a simulation)"
            )
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise InvalidArgument(
                f"{where}: '{NUM_SUPERNODES_OPTION}' must be a positive integer, got {num!r}"
            )
        tls = [key for key, value in paths.items() if value is not None]
        tls += ["insecure"] if fed.insecure else []
        if tls:
            given = ", ".join(f"'{key}'" for key in tls)
            raise InvalidArgument(
                f"{where} is a simulation (no 'address'): {given} apply only to a SuperLink"
            )
        return Federation(
            name=name,
            address="",
            insecure=False,
            options=flat,
            num_supernodes=num,
            source=str(source),
        )
    if num is not None:
        raise InvalidArgument(
            f"{where} has both an 'address' (a SuperLink Exec API) and "
            f"'{NUM_SUPERNODES_OPTION}' (a simulation); keep one"
        )
    return Federation(
        name=name,
        address=fed.address,
        insecure=fed.insecure,
        root_certificates=_read_root_certificates(
            fed.insecure, paths[ROOT_CERTIFICATES_OPTION], base_dir, name
        ),
        options=flat,
        client_tls=_read_client_tls(
            fed.insecure,
            paths[CLIENT_CERTIFICATE_OPTION],
            paths[CLIENT_KEY_OPTION],
            base_dir,
            name,
        ),
        source=str(source),
    )


def _read_client_tls(
    insecure: bool, cert_path: object, key_path: object, base_dir: Path, name: str
) -> ClientTls | None:
    """The CLI's client certificate and key (paths relative to ``base_dir``, ``~`` expanded)."""
    if cert_path is None and key_path is None:
        return None
    where = f"federation {name!r}"
    cert, key = CLIENT_CERTIFICATE_OPTION, CLIENT_KEY_OPTION
    if insecure:
        raise InvalidArgument(f"{where}: 'insecure = true' and '{cert}'/'{key}' conflict")
    if not (isinstance(cert_path, str) and cert_path and isinstance(key_path, str) and key_path):
        raise InvalidArgument(f"{where}: '{cert}' and '{key}' must both be file paths")
    try:
        return ClientTls.from_files(_path(base_dir, cert_path), _path(base_dir, key_path))
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc}") from exc


def _read_root_certificates(
    insecure: bool, cert_path: object, base_dir: Path, name: str
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
    path = _path(base_dir, cert_path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc


def _path(base_dir: Path, path: str) -> Path:
    return base_dir / Path(path).expanduser()
