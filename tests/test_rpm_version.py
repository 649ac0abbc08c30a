"""rpm version comparison, checked pair by pair against rpm 4.18 itself.

References: `rpm --eval '%{lua: print(rpm.vercmp(A, B))}'` (rpmverCmp over parsed
[epoch:]version[-release] strings, so plain versions compare with rpmvercmp) and,
for dependency ranges, rpmdsCompare through Debian's python3-rpm.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from supermin.backends.rpm.version import (
    EQUAL,
    GREATER,
    LESS,
    Evr,
    compare_evr,
    evr_satisfies,
    parse_evr,
    ranges_overlap,
    rpmvercmp,
    sense_flags,
)

# Plain versions (no ':' or '-', so rpm.vercmp compares them with rpmvercmp alone).
VERSION_PAIRS = [
    ("1.0", "1.0"),
    ("1.0", "2.0"),
    ("2.0.1", "2.0"),
    ("2.0.1a", "2.0.1"),
    ("5.5p1", "5.5p10"),
    ("5.5p2", "5.6p1"),
    ("10xyz", "10.1xyz"),
    ("xyz10", "xyz10.1"),
    ("xyz.4", "8"),
    ("6.0.rc1", "6.0"),
    ("10b2", "10a1"),
    ("1.0a", "1.0aa"),
    ("10.0001", "10.1"),  # leading zeros do not count
    ("10.0001", "10.0039"),
    ("4.999.9", "5.0"),
    ("20101121", "20101122"),
    ("2_0", "2.0"),  # any non-alphanumeric is a separator
    ("a+", "a_"),
    ("+_", "_+"),
    ("1..0", "1.0"),
    ("1.0", "1.0."),
    ("1.0~rc1", "1.0"),  # tilde sorts before the end
    ("1.0~rc1", "1.0~rc2"),
    ("1.0~rc1~git123", "1.0~rc1"),
    ("1.0~", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0^", "1.0"),  # caret sorts after the end...
    ("1.0^git1", "1.0.1"),  # ...but before another segment
    ("1.0^git1", "1.0^git2"),
    ("1.0^git1", "1.01"),
    ("1.0^20160101^git1", "1.0^20160102"),
    ("1.0~rc1^git1", "1.0~rc1"),
    ("1.0^git1~pre", "1.0^git1"),
    ("1.0^", "1.0~"),
    ("1.0a", "1.0.1"),
    ("1.0", "1.0a"),
    ("1a", "1.a"),
    ("a", "1"),  # numeric beats alpha
    ("abc", "abd"),
    ("ABC", "abc"),  # strcmp: upper case first
    ("1.2.3", "1.2.3.0"),
    ("123456789012345678901234567890", "123456789012345678901234567889"),
    ("0000001", "1"),
    ("fc19", "fc9"),
    ("el7_4", "el7"),
    ("2.14_k4.12.14_lp151.16", "2.14_k4.12.14_lp151.2"),
    ("1.1.α", "1.1.β"),  # non-ASCII letters are separators to rpm
    ("1.1.αα", "1.1"),
    ("git2cfe611", "git10"),
]

# Full [epoch:]version[-release] strings for compare_evr.
EVR_PAIRS = [
    ("1:1.0-1", "2.0-1"),
    ("0:1.0-1", "1.0-1"),  # no epoch is epoch 0
    ("1.0-1", "1.0"),  # a release beats none when ordering packages
    ("2:1.0-1", "1:3.0-1"),
    ("1:5.5.4-1.fc37", "1:5.5.4-2.fc37"),
    ("1.0-1.el7", "1.0-1.el7_4"),
    ("3.14.5.7-1", "1:3.14.5.7-1"),
    ("10:1-1", "9:2-2"),
    ("1.0-1~beta", "1.0-1"),
    ("1.0-1^post", "1.0-1"),
    ("1.0-a-b", "1.0-a-c"),  # the release starts after the last '-'
    ("01:1.0-1", "1:1.0-1"),
    ("1.0-1", "1.0-1"),
    ("4.15.1-1.fc31", "4.15.1-1.fc31.1"),
]

# Provide (flags, EVR) against a requirement (operator, EVR): does it satisfy it?
RANGES = [
    (EQUAL, "1.0-2", ">=", "1.0"),  # no release in the requirement: any release
    (EQUAL, "1.0-2", ">", "1.0"),
    (EQUAL, "1.0-2", "<=", "1.0"),
    (EQUAL, "1.0-2", "<", "1.0"),
    (EQUAL, "1.0-2", "=", "1.0"),
    (EQUAL, "1.0", "=", "1.0-5"),  # no release in the provide: any release
    (EQUAL, "1.0", ">", "1.0-5"),
    (EQUAL, "1:1.0-1", ">=", "2.0"),
    (EQUAL, "1.0-1", ">=", "1:0.5"),
    (EQUAL, "0:1.0-1", "=", "1.0-1"),
    (EQUAL, "1:3.14.5.7-1", ">=", "1:3.14.5.7"),
    (EQUAL, "1:3.15-1", "<", "1:3.15"),
    (EQUAL, "1.0~rc1-1", ">=", "1.0"),
    (EQUAL, "1.0^git1-1", ">", "1.0"),
    (GREATER | EQUAL, "2.0", "<", "3.0"),  # two ranges
    (GREATER, "2.0", "<", "2.0"),
    (LESS | EQUAL, "2.0", ">=", "2.0"),
    (LESS, "2.0", ">", "1.0"),
    (EQUAL, "1.0-1", None, None),
    (0, "", ">=", "1.0"),  # an unversioned provide satisfies any version
]


def _rpm_lua(pairs: Sequence[tuple[str, str]], tmp_path: Path) -> list[int]:
    """rpm.vercmp(a, b) for every pair, in one rpm run."""
    script = tmp_path / "vercmp.lua"
    # Inside %{lua:} rpm collects print() output without the newlines: print once.
    lines = ["local r = {}"]
    lines += [f"r[#r + 1] = rpm.vercmp([==[{a}]==], [==[{b}]==])" for a, b in pairs]
    lines.append('print(table.concat(r, " "))')
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run(
        ["rpm", "--eval", f"%{{lua: dofile('{script}')}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(word) for word in out.split()]


_RPMDS = """
import json, sys, rpm
out = []
for pflags, pevr, rflags, revr in json.load(sys.stdin):
    provide = rpm.ds(("cap", pflags, pevr), rpm.RPMTAG_PROVIDENAME)
    require = rpm.ds(("cap", rflags, revr), rpm.RPMTAG_REQUIRENAME)
    out.append(bool(provide.Compare(require)))
json.dump(out, sys.stdout)
"""


def _rpmds_compare(cases: Sequence[tuple[int, str, int, str]]) -> list[bool]:
    # python3-rpm is built for Debian's own interpreter only.
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", _RPMDS],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[bool] = json.loads(proc.stdout)
    return result


def test_enough_pairs() -> None:
    assert len(VERSION_PAIRS) + len(EVR_PAIRS) >= 40
    assert len(VERSION_PAIRS) >= 40


def test_rpmvercmp_matches_rpm(tmp_path: Path) -> None:
    pairs = VERSION_PAIRS + [(b, a) for a, b in VERSION_PAIRS]
    expected = _rpm_lua(pairs, tmp_path)
    assert len(expected) == len(pairs)
    ours = [rpmvercmp(a, b) for a, b in pairs]
    mismatches = [
        (a, b, o, e) for (a, b), o, e in zip(pairs, ours, expected, strict=True) if o != e
    ]
    assert not mismatches, mismatches


def test_compare_evr_matches_rpm(tmp_path: Path) -> None:
    pairs = EVR_PAIRS + [(b, a) for a, b in EVR_PAIRS]
    expected = _rpm_lua(pairs, tmp_path)
    ours = [compare_evr(parse_evr(a), parse_evr(b)) for a, b in pairs]
    mismatches = [
        (a, b, o, e) for (a, b), o, e in zip(pairs, ours, expected, strict=True) if o != e
    ]
    assert not mismatches, mismatches


def test_every_outcome_is_covered(tmp_path: Path) -> None:
    outcomes = {rpmvercmp(a, b) for a, b in VERSION_PAIRS}
    outcomes |= {compare_evr(parse_evr(a), parse_evr(b)) for a, b in EVR_PAIRS}
    assert outcomes == {-1, 0, 1}


def test_ranges_match_rpmds_compare() -> None:
    cases = [(pf, pevr, sense_flags(op), revr or "") for pf, pevr, op, revr in RANGES]
    expected = _rpmds_compare(cases)
    ours = [ranges_overlap(*case) for case in cases]
    mismatches = [(c, o, e) for c, o, e in zip(RANGES, ours, expected, strict=True) if o != e]
    assert not mismatches, mismatches
    assert set(ours) == {True, False}


def test_evr_satisfies_is_a_provide_of_equality() -> None:
    for flags, provided, op, required in RANGES:
        if flags == EQUAL:
            assert evr_satisfies(provided, op, required) == ranges_overlap(
                EQUAL, provided, sense_flags(op), required or ""
            )
    assert evr_satisfies("1:5.5.4-1.fc37", "=", "1:5.5.4")
    assert not evr_satisfies("5.5.4-1.fc37", "=", "1:5.5.4")
    assert evr_satisfies("2:1.0-1", ">=", "1:3.0")


@pytest.mark.parametrize(
    ("text", "evr"),
    [
        ("1.0", Evr(None, "1.0", None)),
        ("1.0-1", Evr(None, "1.0", "1")),
        ("2:1.0-1.fc37", Evr(2, "1.0", "1.fc37")),
        ("1:", Evr(1, "", None)),
        (":1.0", Evr(0, "1.0", None)),
        ("a:1.0-1", Evr(None, "a:1.0", "1")),
        ("1.0-a-b", Evr(None, "1.0-a", "b")),
    ],
)
def test_parse_evr_splits_like_rpm(text: str, evr: Evr) -> None:
    assert parse_evr(text) == evr


def test_evr_prints_as_rpm_writes_it() -> None:
    for text in ("1.0", "1.0-1", "2:1.0-1.fc37", "0:1.0"):
        assert str(parse_evr(text)) == text


def test_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="operator"):
        sense_flags("~=")
