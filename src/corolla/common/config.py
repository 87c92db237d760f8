"""Entry-point options declared once, resolved flag > environment > config file > default.

A command lists its `Option`s in a `Command`; `Command.parse(argv)` returns `Values`, from
which its parse function builds its typed config. Environment variables are ``COROLLA_`` plus
the flag name (``--max-wait`` -> ``COROLLA_MAX_WAIT``). ``--config FILE`` names a TOML file
whose table ``[<command.table>]`` holds options by flag name (``max-wait = 5``); other tables
are ignored, so one file can serve every command. Every problem is a `UsageError`; only a
`main()` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import corolla
from corolla.common.errors import InvalidArgument

if TYPE_CHECKING:  # the aliases module imports NumPy, which entry points do not need
    from corolla.common.typing import UserConfig

T = TypeVar("T")
ENV_PREFIX = "COROLLA_"
PRECEDENCE = "Precedence: flag > environment variable > config file (--config) > default."
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class UsageError(InvalidArgument):
    """The command line, environment or config file is wrong; `main` prints it and exits 2."""


# -- validators: text -> value, raising ValueError with a reason ----------------------------------


def duration(text: str) -> float:
    """Seconds: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {text!r}")
    return value


def address(text: str) -> str:
    """``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:9092``), port 0..65535."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if (
        not sep
        or not host
        or (":" in host and not bracketed)
        or any(c in host for c in " /")
        or not port.isdigit()
        or int(port) > 65535
    ):
        raise ValueError(f"must be HOST:PORT (IPv6 as [::1]:PORT), got {text!r}")
    return text


def path(text: str) -> Path:
    if not text:
        raise ValueError("expected a path, got ''")
    return Path(text).expanduser()


# -- declaration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option. ``parse`` turns text into the value; ``switch``: an on/off flag."""

    flag: str
    help: str
    default: object = None
    parse: Callable[[str], object] = str
    metavar: str | None = None
    switch: bool = False
    choices: tuple[str, ...] = ()
    env: bool = True  # False: flag and file only
    # The flag may be given several times; the values reach ``parse`` joined with commas (as
    # they are written in the variable, ``A,B``, or in the file, ``["A", "B"]`` or ``"A,B"``).
    repeat: bool = False

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--")

    @property
    def env_var(self) -> str | None:
        return ENV_PREFIX + self.name.upper().replace("-", "_") if self.env else None


@dataclass(frozen=True)
class Values:
    """Resolved options by name (flag without dashes), and where each came from."""

    values: Mapping[str, object]
    sources: Mapping[str, str]

    def get(self, name: str, kind: type[T]) -> T:
        value = self.values[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind):
            raise TypeError(f"option {name}: {value!r} is not {kind.__name__}")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        return None if self.values[name] is None else self.get(name, kind)

    def given(self, name: str) -> bool:
        return self.sources[name] != "default"

    def label(self, name: str) -> str:
        """How to name the option in a message: its flag, env var or file key."""
        source = self.sources[name]
        return f"--{name}" if source in ("flag", "default") else source


class Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` instead of exiting on a bad command line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Command:
    prog: str
    table: str  # the config file's table for this command
    description: str
    options: tuple[Option, ...]
    epilog: str = ""

    def parser(self) -> Parser:
        width = max(len(o.flag) for o in self.options)
        env_lines = "\n".join(
            f"  {o.flag:<{width}}  {o.env_var or '(flag or file only)'}" for o in self.options
        )
        epilog = (
            f"{self.epilog.rstrip()}\n\n" if self.epilog else ""
        ) + f"{PRECEDENCE}\nConfig file: table [{self.table}], keys = flag names without dashes.\n"
        epilog += f"Environment variables:\n{env_lines}\n"
        parser = Parser(
            prog=self.prog,
            description=self.description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--version", action="version", version=version_line(self.prog))
        parser.add_argument(
            "--config", metavar="FILE", help=f"TOML file with a [{self.table}] table"
        )
        for option in self.options:
            kwargs: dict[str, Any] = {"default": None, "help": _help(option)}
            if option.switch:
                kwargs["action"] = "store_true"
            else:
                kwargs["metavar"] = option.metavar
                if option.choices:
                    kwargs["choices"] = option.choices
                if option.repeat:
                    kwargs["action"] = "append"
            parser.add_argument(option.flag, **kwargs)
        return parser

    def parse(
        self, argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> Values:
        """Resolve every option; ``environ`` defaults to `os.environ` (``{}``: ignore env)."""
        args = vars(self.parser().parse_args(argv))
        env = os.environ if environ is None else environ
        table = _read_table(Path(args["config"]), self.table) if args["config"] else {}
        known = {o.name for o in self.options} | {o.name.replace("-", "_") for o in self.options}
        unknown = sorted(set(table) - known)
        if unknown:
            raise UsageError(f"{args['config']}: [{self.table}]: unknown option {unknown[0]!r}")
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for option in self.options:
            dest = option.name.replace("-", "_")
            file_key = option.name if option.name in table else dest
            if args[dest] is not None:
                raw, source = args[dest], "flag"
            elif option.env_var and env.get(option.env_var, "") != "":
                raw, source = env[option.env_var], option.env_var
            elif file_key in table:
                raw, source = table[file_key], f"{args['config']} [{self.table}] {file_key}"
            else:
                default = bool(option.default) if option.switch else option.default
                values[option.name], sources[option.name] = default, "default"
                continue
            label = option.flag if source == "flag" else source
            values[option.name], sources[option.name] = _convert(option, raw, label), source
        return Values(values, sources)


def version_line(prog: str) -> str:
    return f"{prog} (Corolla) {corolla.__version__}"


def _help(option: Option) -> str:
    text = option.help
    if option.default is not None and not option.switch:
        text += f" (default: {option.default})"
    return text.replace("%", "%%")


def _read_table(file: Path, table: str) -> dict[str, object]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config: cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {file} is not valid TOML: {exc}") from exc
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise UsageError(f"--config: {file}: {table} must be a table")
    return section


def _convert(option: Option, raw: object, label: str) -> object:
    if option.switch:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise UsageError(f"{label}: expected true or false, got {raw!r}")
    if option.repeat and isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        raw = ",".join(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise UsageError(f"{label}: expected {option.metavar or 'a value'}, got {raw!r}")
    text = str(raw)
    if option.choices and text not in option.choices:
        raise UsageError(f"{label}: must be one of {', '.join(option.choices)}, got {text!r}")
    try:
        return option.parse(text)
    except ValueError as exc:
        raise UsageError(f"{label}: {exc}") from None


def write_ready_file(file: Path, payload: Mapping[str, object]) -> None:
    """Write ``payload`` as JSON atomically: a reader sees the whole file or none."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(payload), out)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())  # durable: a node id must survive a crash of the machine
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_ready_file(file: Path) -> dict[str, Any] | None:
    """The JSON of a ready file, or None while it does not exist yet."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"unreadable ready file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"ready file {file} does not hold a JSON object")
    return data


# -- nested <-> flat app configs (Flower's ``flwr.common.config`` helpers) ------------------------

_SEPARATOR = "."
_USER_CONFIG_TYPES = (bool, float, int, str)  # corolla.common.typing.UserConfigValue


def flatten_dict(raw_dict: dict[str, Any] | None, parent_key: str = "") -> UserConfig:
    """Nested tables to one level: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; None -> ``{}``.

    ``parent_key`` prefixes every key (``parent.key``). Values must be bool, float, int or str
    (or nested dicts of them): anything else raises `ValueError`, as in Flower.
    """
    flat: UserConfig = {}
    for key, value in (raw_dict or {}).items():
        name = f"{parent_key}{_SEPARATOR}{key}" if parent_key else key
        if isinstance(value, dict):
            flat.update(flatten_dict(value, parent_key=name))
        elif isinstance(value, _USER_CONFIG_TYPES):
            flat[name] = value
        else:
            raise ValueError(
                f"config key {name!r}: {type(value).__name__} is not allowed "
                "(use bool, float, int, str, or a table of them)"
            )
    return flat


def unflatten_dict(flat_dict: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested dicts: ``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``.

    A key that is both a value and a table (``"a"`` and ``"a.b"``) raises `ValueError`.
    """
    nested: dict[str, Any] = {}
    for key, value in flat_dict.items():
        *parents, leaf = key.split(_SEPARATOR)
        table = nested
        for depth, part in enumerate(parents):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                clash = _SEPARATOR.join(parents[: depth + 1])
                raise ValueError(f"config key {key!r} nests under {clash!r}, which is a value")
        if isinstance(table.get(leaf), dict):
            raise ValueError(f"config key {key!r} is a value and a table of nested keys")
        table[leaf] = value
    return nested
