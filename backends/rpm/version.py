"""rpm's version comparison: rpmvercmp, [epoch:]version[-release] and range overlap.

Everything here follows rpm 4.x (rpmio/rpmvercmp.c, rpmio/rpmver.c,
lib/rpmds.c) to the letter, because the resolver must choose what dnf would:

- a version is a series of segments, each all digits or all ASCII letters;
  anything else only separates segments (so ``1.0`` == ``1_0``);
- numeric segments compare as numbers (leading zeros ignored) and beat alpha ones;
- ``~`` sorts before anything, even the end of the string (``1.0~rc1 < 1.0``);
- ``^`` sorts after the end of the string but before any other segment
  (``1.0 < 1.0^git1 < 1.0.1``);
- a missing epoch counts as 0; a requirement without a release matches every
  release of the version it names.
"""

from __future__ import annotations

from typing import NamedTuple

# rpmsenseFlags bits that make a dependency versioned.
LESS = 1 << 1
GREATER = 1 << 2
EQUAL = 1 << 3
SENSE_MASK = LESS | GREATER | EQUAL

# rpm spells the operators <, <=, =, >=, >; the Debian-style << and >> that
# supermin.packages.Relation documents are accepted as well.
_OPERATORS = {
    "<": LESS,
    "<<": LESS,
    "<=": LESS | EQUAL,
    "=": EQUAL,
    ">=": GREATER | EQUAL,
    ">>": GREATER,
    ">": GREATER,
}


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_alpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _is_separator(char: str) -> bool:
    # rpm's risalnum() is ASCII-only: any other character (UTF-8 included) separates.
    return not (_is_digit(char) or _is_alpha(char) or char in "~^")


def rpmvercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as `a` is older than, the same as or newer than `b` (rpmvercmp(3))."""
    if a == b:
        return 0
    i = j = 0
    len_a, len_b = len(a), len(b)
    while i < len_a or j < len_b:
        while i < len_a and _is_separator(a[i]):
            i += 1
        while j < len_b and _is_separator(b[j]):
            j += 1
        one = a[i] if i < len_a else ""
        two = b[j] if j < len_b else ""

        if one == "~" or two == "~":
            if one != "~":
                return 1
            if two != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if one == "^" or two == "^":
            if not one:
                return -1
            if not two:
                return 1
            if one != "^":
                return 1
            if two != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (one and two):
            break

        matches = _is_digit if _is_digit(one) else _is_alpha
        end_a, end_b = i, j
        while end_a < len_a and matches(a[end_a]):
            end_a += 1
        while end_b < len_b and matches(b[end_b]):
            end_b += 1
        seg_a, seg_b = a[i:end_a], b[j:end_b]
        if not seg_b:
            # Different segment types: the numeric one is newer.
            return 1 if matches is _is_digit else -1
        if matches is _is_digit:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = end_a, end_b

    if i >= len_a and j >= len_b:
        return 0
    return -1 if i >= len_a else 1


class Evr(NamedTuple):
    """[epoch:]version[-release]; None where the text had no epoch or no release."""

    epoch: int | None
    version: str
    release: str | None

    def __str__(self) -> str:
        text = self.version if self.epoch is None else f"{self.epoch}:{self.version}"
        return text if self.release is None else f"{text}-{self.release}"


def parse_evr(text: str) -> Evr:
    """Split like rpm's parseEVR: leading digits + ':' are the epoch, the last '-' the release.

    ``":1.0"`` has epoch 0, as in rpm; a non-numeric prefix before ":" is part of
    the version.
    """
    digits = 0
    while digits < len(text) and _is_digit(text[digits]):
        digits += 1
    epoch: int | None = None
    rest = text
    if text[digits : digits + 1] == ":":
        epoch = int(text[:digits] or "0")
        rest = text[digits + 1 :]
    version, dash, release = rest.rpartition("-")
    if not dash:
        return Evr(epoch, rest, None)
    return Evr(epoch, version, release)


def _compare_parts(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return rpmvercmp(a, b)


def compare_evr(
    a: Evr | tuple[int | str | None, str, str | None],
    b: Evr | tuple[int | str | None, str, str | None],
) -> int:
    """Order two (epoch, version, release) triples as rpm does (rpmverCmp).

    A missing epoch is 0. A missing release sorts before any release: this is the
    ordering of two packages; for "does this provide satisfy that requirement"
    use `evr_satisfies` or `ranges_overlap`, where a missing release is a wildcard.
    """
    result = rpmvercmp(str(a[0] or 0), str(b[0] or 0))
    if not result:
        result = _compare_parts(a[1], b[1])
    if not result:
        result = _compare_parts(a[2], b[2])
    return result


def sense_flags(op: str | None) -> int:
    """rpmsenseFlags for an operator written '<', '<=', '=', '>=', '>' (None: unversioned)."""
    if op is None:
        return 0
    try:
        return _OPERATORS[op]
    except KeyError:
        raise ValueError(f"unknown rpm dependency operator {op!r}") from None


def ranges_overlap(flags_a: int, evr_a: str, flags_b: int, evr_b: str) -> bool:
    """Whether two dependency ranges on the same name intersect (rpmdsCompare).

    A provide `foo = 1.0-2` is the range (EQUAL, "1.0-2"). An unversioned side, or
    an empty EVR, overlaps everything. When only one side has a release, rpm ignores
    releases if the other side includes equality: `foo >= 1.0` accepts `1.0-2`.
    """
    if not (flags_a & SENSE_MASK and flags_b & SENSE_MASK) or not (evr_a and evr_b):
        return True
    a, b = parse_evr(evr_a), parse_evr(evr_b)
    # Epochs: compared when both are given, else only a positive one counts.
    if a.epoch is not None and b.epoch is not None:
        sense = rpmvercmp(str(a.epoch), str(b.epoch))
    elif a.epoch:
        sense = 1
    elif b.epoch:
        sense = -1
    else:
        sense = 0
    if sense == 0:
        sense = rpmvercmp(a.version, b.version)
        if sense == 0:
            if a.release and b.release:
                sense = rpmvercmp(a.release, b.release)
            elif (a.release and flags_b & EQUAL) or (b.release and flags_a & EQUAL):
                return True
    if sense < 0:
        return bool(flags_a & GREATER or flags_b & LESS)
    if sense > 0:
        return bool(flags_a & LESS or flags_b & GREATER)
    return bool(
        (flags_a & EQUAL and flags_b & EQUAL)
        or (flags_a & LESS and flags_b & LESS)
        or (flags_a & GREATER and flags_b & GREATER)
    )


def evr_satisfies(provided: str, op: str | None, required: str | None) -> bool:
    """Whether a package (or a provide) at EVR `provided` satisfies `name OP required`.

    `provided` is a full "[E:]V-R" (use the package's own EVR for its name).
    Follows rpm: no release in `required` matches any release, and a provide
    without a release matches any required release.
    """
    if op is None or not required:
        return True
    return ranges_overlap(EQUAL, provided, sense_flags(op), required)
