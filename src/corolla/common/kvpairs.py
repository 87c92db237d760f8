"""``key=value key2='text'`` option strings (run config, node config): splitting into pairs."""

from __future__ import annotations

from corolla.common.errors import InvalidArgument

_OPENERS = {"[": "]", "{": "}"}


def split_pairs(text: str, option: str = "--run-config") -> list[str]:
    """Split on whitespace outside TOML strings, arrays and inline tables."""
    pairs: list[str] = []
    current: list[str] = []
    quote = ""
    depth: list[str] = []
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in _OPENERS:
            depth.append(_OPENERS[char])
        elif depth and char == depth[-1]:
            depth.pop()
        elif char.isspace() and not depth:
            if current:
                pairs.append("".join(current))
                current = []
            continue
        current.append(char)
    if quote or depth:
        raise InvalidArgument(f"{option}: unterminated {quote or depth[0]} in {text!r}")
    if current:
        pairs.append("".join(current))
    return pairs
