"""supermin's --size syntax: a number and a unit, as supermin 5 reads it."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {"b": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>[A-Za-z]*)")


def parse_size(text: str) -> int:
    """The number of bytes a --size word means: "4G", "512M", "1.5G", "10737418240b".

    The units are supermin 5's (b for bytes; K, M, G for powers of 1024) plus T, and
    like supermin 5 a unit is required and case matters: the man page asks for a
    lowercase b to give bytes, so a bare number or "4g" is refused rather than
    guessed at. A fraction is truncated to whole bytes, as supermin's
    Int64.of_float does.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"cannot parse size {text!r}: expected a number and a unit, e.g. 4G")
    unit = match["unit"]
    if not unit:
        raise ValueError(f"size {text!r} has no unit: add b for bytes, or K, M, G or T")
    if unit not in _UNITS:
        upper = unit.upper()
        advice = f"; did you mean {match['number']}{upper}?" if upper in _UNITS else ""
        raise ValueError(f"unknown size unit {unit!r} in {text!r}: use b, K, M, G or T{advice}")
    size = int(Decimal(match["number"]) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"size {text!r} is not more than zero bytes")
    return size
