"""The one place where the SQL of the state backends differs: the connection both speak through.

Every query of the state is written once, in SQL that SQLite and PostgreSQL both understand,
with ``?`` placeholders and a few tokens for what they spell differently:

================== ======================================= =====================================
token              SQLite                                  PostgreSQL
================== ======================================= =====================================
``{in_list}``      ``IN (SELECT value FROM json_each(?))`` ``= ANY(%s)``: ``x {in_list}`` is
                                                           true if x is in a list parameter
``{json_items}``   ``json_each``                           ``json_array_elements_text``: the
                                                           items (``value``) of a JSON array
``{for_update}``   (nothing: a write transaction holds     ``FOR UPDATE``
                   the whole database)
``{for_share}``    (nothing)                               ``FOR SHARE``
``{for_key_share}`` (nothing)                              ``FOR KEY SHARE``
``{runs_active}``  ``INDEXED BY runs_active``              (nothing)
================== ======================================= =====================================

A list parameter (for ``{in_list}``) is a Python list; `Conn.lock` takes a named lock for the
rest of the transaction (SQLite: a no-op, its write transactions run one at a time). Queries
hold no other braces.

Row locks (PostgreSQL; SQLite serialises write transactions anyway) are always taken in this
order, each set sorted by key, so that no two transactions wait for each other (a deadlock):
a run's row (``FOR SHARE`` to add to the run, ``FOR UPDATE`` to change its status), then
instructions (to mark, answer or delete them), then objects (``FOR KEY SHARE`` to add a use
of one, ``FOR UPDATE`` before deciding to delete it), then ``run_usage`` rows.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

IN_LIST, JSON_ITEMS = "{in_list}", "{json_items}"
FOR_UPDATE, FOR_SHARE, FOR_KEY_SHARE = "{for_update}", "{for_share}", "{for_key_share}"

Params = Sequence[object]


class Rows(Protocol):
    """What a query returns: a DB-API cursor of either driver."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Conn(ABC):
    """A connection of one backend, taking the queries in the shared SQL."""

    TOKENS: ClassVar[Mapping[str, str]]

    @abstractmethod
    def execute(self, query: str, params: Params = ()) -> Rows: ...

    @abstractmethod
    def executemany(self, query: str, rows: Iterable[Params]) -> None: ...

    @abstractmethod
    def lock(self, name: str) -> None:
        """Hold the lock ``name`` until the transaction ends (one holder at a time)."""

    @classmethod
    def sql(cls, query: str) -> str:
        """``query`` in this backend's SQL (worked out once per query)."""
        return _translate(query, cls)

    @classmethod
    def spell(cls, query: str) -> str:
        """`sql` without the cache: the tokens filled in."""
        return query.format_map(cls.TOKENS)


@functools.lru_cache(maxsize=1024)
def _translate(query: str, dialect: type[Conn]) -> str:
    return dialect.spell(query)


class SqliteConn(Conn):
    """An `sqlite3` connection (``raw``, for what only SQLite has: blobs)."""

    TOKENS: ClassVar[Mapping[str, str]] = {
        "in_list": "IN (SELECT value FROM json_each(?))",
        "json_items": "json_each",
        "for_update": "",
        "for_share": "",
        "for_key_share": "",
        "runs_active": "INDEXED BY runs_active",
    }

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, query: str, params: Params = ()) -> Rows:
        values = [json.dumps(p) if isinstance(p, list) else p for p in params]
        return self.raw.execute(self.sql(query), values)

    def executemany(self, query: str, rows: Iterable[Params]) -> None:
        self.raw.executemany(self.sql(query), rows)

    def lock(self, name: str) -> None:
        pass  # BEGIN IMMEDIATE holds the whole database already
