"""dpkg version semantics and relationship parsing, with dpkg itself as the judge.

Every table row states the answer we expect; the test asks `dpkg --compare-versions`
as well, so a wrong row fails just like a wrong implementation.
"""

from __future__ import annotations

import itertools
import subprocess
from functools import cmp_to_key

import pytest

from supermin.backends.deb.relations import (
    compare_versions,
    parse_alternatives,
    parse_flat,
    parse_requirements,
    version_satisfies,
)
from supermin.packages import Relation, Requirement

# (a, b, sign of a compared with b)
ORDERING: list[tuple[str, str, int]] = [
    # plain numbers
    ("1.0", "1.0", 0),
    ("1.0", "1.1", -1),
    ("1.2", "1.10", -1),  # numeric, not lexical
    ("1.9", "1.10", -1),
    ("2.0", "10.0", -1),
    ("18446744073709551616", "18446744073709551615", 1),  # beyond 64 bits
    # epochs
    ("1:1.0", "2.0", 1),
    ("1:0", "99", 1),
    ("2:1.0", "1:9.9", 1),
    ("0:1.0", "1.0", 0),  # a missing epoch is epoch 0
    ("1:1.0-1", "3.0-1", 1),  # what tp-greet in the synthetic set relies on
    # tilde sorts before everything, even the end of the string
    ("1.0~rc1", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~~", 1),
    ("1.0~", "1.0~a", -1),
    ("1.0~a", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1-1", "1.0-1", -1),
    ("1:1.0~rc1-1", "1:1.0-1", -1),
    ("2.14.0~", "2.14.0", -1),
    # revisions
    ("1.0-1", "1.0-2", -1),
    ("1.0-2", "1.0-10", -1),
    ("1.0", "1.0-0", 0),  # no revision compares like revision "0"
    ("1.0-0", "1.0-00", 0),
    ("1.0-1", "1.0-01", 0),
    ("1.0-1~bpo12+1", "1.0-1", -1),  # backports sort before the release
    ("1.0-1+b1", "1.0-1", 1),  # binNMUs sort after it
    ("1.0-1+deb12u1", "1.0-1", 1),
    ("1.0-1+deb12u10", "1.0-1+deb12u9", 1),
    ("1.0-a", "1.0-1", 1),  # a letter beats the end of the non-digit part
    ("1.0-1-1", "1.0-1", 1),  # upstream "1.0-1": the last hyphen starts the revision
    ("1.0-1-1", "1.0-2", 1),  # upstream "1.0-1" > "1.0"; the revisions never meet
    ("9.2p1-2+deb12u10", "9.2p1-2+deb12u9", 1),
    # letters against digits, the end of string, and other characters
    ("1.0", "1.0a", -1),  # the end sorts before a letter
    ("1.0a", "1.0b", -1),
    ("1.0Z", "1.0a", -1),  # letters by ASCII: capitals first
    ("1.0a", "1.0.1", -1),  # letters before non-letters
    ("1.0a", "1.0+", -1),
    ("1.0a", "1a", 1),  # 1 = 1, then ".0a" against "a": '.' sorts after a letter
    ("1.0", "1.0.0", -1),  # the end sorts before '.'
    ("1.0", "1.0+", -1),
    ("1.0+a", "1.0.a", -1),  # '+' < '.'
    ("1.0+dfsg", "1.0", 1),
    ("1.0+dfsg", "1.0.1", -1),
    ("1.0~dfsg", "1.0", -1),
    ("1.0+b1", "1.0.1", -1),
    ("1:2.2.1", "1:2.2+really2.1", 1),  # "+really" downgrades sort before the real one
    ("1.17", "1.13~alpha1+dfsg", 1),
    # leading zeros are insignificant in numeric parts
    ("1.01", "1.1", 0),
    ("1.001", "1.1", 0),
    ("01.0", "1.0", 0),
    ("1.010", "1.10", 0),
    ("1.0010", "1.9", 1),
    ("00", "0", 0),
    # mixed real-world shapes
    ("2.36-9+deb12u4", "2.36", 1),
    ("5.36.0-7+deb12u3", "5.36.0-7+deb12u2", 1),
    ("1:4.1.0", "4.4.33", 1),
    ("3.0.19", "3.0.9", 1),
    ("0.99.7.1", "1.5.2-6", -1),
    ("7.6-4~", "7.6.q-32", -1),
    ("1:1.2.13.dfsg-1", "1:1.1.4", 1),
    ("252.38-1~deb12u1", "252.38-1", -1),
    ("1.0.0~git20230101.abcdef", "1.0.0", -1),
]


def _dpkg(a: str, op: str, b: str) -> bool:
    """dpkg --compare-versions A OP B (exit 0 means true)."""
    proc = subprocess.run(
        ["dpkg", "--compare-versions", a, op, b], capture_output=True, text=True, check=False
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"dpkg --compare-versions {a} {op} {b}: {proc.stderr}")
    return proc.returncode == 0


def _dpkg_sign(a: str, b: str) -> int:
    if _dpkg(a, "lt", b):
        return -1
    return 1 if _dpkg(a, "gt", b) else 0


@pytest.mark.parametrize(("a", "b", "expected"), ORDERING, ids=[f"{a}|{b}" for a, b, _ in ORDERING])
def test_compare_versions_agrees_with_dpkg(a: str, b: str, expected: int) -> None:
    assert _dpkg_sign(a, b) == expected, "the table is wrong: dpkg disagrees"
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_compare_versions_returns_a_sign() -> None:
    # python-debian returns arbitrary magnitudes; callers rely on -1/0/1.
    assert compare_versions("1.0", "1.9") == -1
    assert compare_versions("9", "1") == 1
    assert compare_versions("1:0", "0:1") == 1


def test_sorting_with_compare_versions_is_dpkg_order() -> None:
    versions = sorted({v for a, b, _ in ORDERING for v in (a, b)})
    ordered = sorted(versions, key=cmp_to_key(compare_versions))
    for lower, higher in itertools.pairwise(ordered):
        assert _dpkg(lower, "le", higher), (lower, higher)


# (version, op, wanted, expected); `<` and `>` are dpkg's obsolete spellings of <= and >=.
SATISFIES: list[tuple[str, str, str, bool]] = [
    ("1.0", "<<", "1.1", True),
    ("1.0", "<<", "1.0", False),
    ("1.1", "<<", "1.0", False),
    ("1.0", "<=", "1.0", True),
    ("1.0", "<=", "1.0-0", True),
    ("1.0", "<=", "1.0~", False),
    ("1.0", "<=", "0.9", False),
    ("1.0", "=", "1.0", True),
    ("1.0", "=", "0:1.0-0", True),
    ("1.0", "=", "1.0-1", False),
    ("1.0-1", ">=", "1.0-1", True),
    ("1.0-1", ">=", "1.0", True),
    ("1.0~rc1", ">=", "1.0", False),
    ("2.14.0", ">=", "2.14.0~", True),
    ("1:1.0", ">=", "9.0", True),
    ("1.0", ">>", "1.0", False),
    ("1.0", ">>", "1.0~", True),
    ("1.0", ">>", "0.9", True),
    ("1.0", "<", "1.0", True),  # obsolete: <=
    ("1.0", "<", "1.1", True),
    ("1.1", "<", "1.0", False),
    ("1.0", ">", "1.0", True),  # obsolete: >=
    ("1.1", ">", "1.0", True),
    ("1.0", ">", "1.1", False),
]


@pytest.mark.parametrize(
    ("version", "op", "wanted", "expected"),
    SATISFIES,
    ids=[f"{v} {op} {w}" for v, op, w, _ in SATISFIES],
)
def test_version_satisfies_agrees_with_dpkg(
    version: str, op: str, wanted: str, expected: bool
) -> None:
    assert _dpkg(version, op, wanted) is expected, "the table is wrong: dpkg disagrees"
    assert version_satisfies(version, op, wanted) is expected


def test_version_satisfies_every_operator_around_a_version() -> None:
    wanted = "0:1.0"
    around = ("1.0~rc1", "1.0-0", "1:0.9")  # below, equal (epoch 0, revision 0), above
    table = {
        "<<": (True, False, False),
        "<=": (True, True, False),
        "=": (False, True, False),
        ">=": (False, True, True),
        ">>": (False, False, True),
        "<": (True, True, False),
        ">": (False, True, True),
    }
    for op, expected in table.items():
        got = tuple(version_satisfies(v, op, wanted) for v in around)
        judged = tuple(_dpkg(v, op, wanted) for v in around)
        assert got == judged == expected, op


def test_version_satisfies_without_constraint() -> None:
    assert version_satisfies("1.0", None, None)
    assert version_satisfies("1.0", ">=", None)
    assert version_satisfies("1.0", None, "2.0")


def test_version_satisfies_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="unknown version operator"):
        version_satisfies("1.0", "!=", "1.0")


# python3-jack-client 0.5.3-1 in Debian 12 main, verbatim.
JACK_DEPENDS = (
    "python3-cffi-backend-api-min (<= 9729), python3-cffi-backend-api-max (>= 9729), "
    "python3:any (>= 3.7~), python3-cffi, "
    "libjack-jackd2-0 (>= 1.9.10+20150825) | libjack-0.125"
)
# openssh-server 1:9.2p1-2+deb12u10 in Debian 12 main, verbatim.
OPENSSH_DEPENDS = (
    "adduser, libpam-modules, libpam-runtime, lsb-base, openssh-client (= 1:9.2p1-2+deb12u10), "
    "openssh-sftp-server, procps, ucf, debconf (>= 0.5) | debconf-2.0, "
    "runit-helper (>= 2.14.0~), libaudit1 (>= 1:2.2.1), libc6 (>= 2.36), "
    "libcom-err2 (>= 1.43.9), libcrypt1 (>= 1:4.1.0), libgssapi-krb5-2 (>= 1.17), "
    "libkrb5-3 (>= 1.13~alpha1+dfsg), libpam0g (>= 0.99.7.1), libselinux1 (>= 3.1~), "
    "libssl3 (>= 3.0.19), libsystemd0, libwrap0 (>= 7.6-4~), zlib1g (>= 1:1.1.4)"
)


def test_parse_alternatives_real_depends_with_any_and_alternatives() -> None:
    assert parse_alternatives(JACK_DEPENDS) == (
        (Relation("python3-cffi-backend-api-min", "<=", "9729"),),
        (Relation("python3-cffi-backend-api-max", ">=", "9729"),),
        (Relation("python3", ">=", "3.7~", "any"),),
        (Relation("python3-cffi"),),
        (
            Relation("libjack-jackd2-0", ">=", "1.9.10+20150825"),
            Relation("libjack-0.125"),
        ),
    )


def test_parse_alternatives_real_depends_with_epochs() -> None:
    groups = parse_alternatives(OPENSSH_DEPENDS)
    assert len(groups) == 22
    assert groups[0] == (Relation("adduser"),)
    assert groups[4] == (Relation("openssh-client", "=", "1:9.2p1-2+deb12u10"),)
    assert groups[8] == (Relation("debconf", ">=", "0.5"), Relation("debconf-2.0"))
    assert groups[9] == (Relation("runit-helper", ">=", "2.14.0~"),)
    assert groups[-1] == (Relation("zlib1g", ">=", "1:1.1.4"),)
    assert [len(group) for group in groups].count(2) == 1


def test_parse_alternatives_normalises_spelling() -> None:
    # Multi-line control fields, odd spacing, obsolete operators, explicit arch qualifiers.
    raw = "a (<1.0),\n b(> 2) |c:amd64 (>>3) , d:native"
    assert parse_alternatives(raw) == (
        (Relation("a", "<=", "1.0"),),
        (Relation("b", ">=", "2"), Relation("c", ">>", "3", "amd64")),
        (Relation("d", None, None, "native"),),
    )


def test_parse_alternatives_empty() -> None:
    assert parse_alternatives("") == ()
    assert parse_alternatives("  ") == ()


def test_relation_and_requirement_text_round_trip() -> None:
    groups = parse_alternatives(JACK_DEPENDS)
    assert ", ".join(str(Requirement(group)) for group in groups) == JACK_DEPENDS


def test_parse_requirements_marks_pre_depends_strict() -> None:
    requirements = parse_requirements("b, c | d", "a (>= 1)")
    assert requirements == [
        Requirement((Relation("a", ">=", "1"),), strict=True),
        Requirement((Relation("b"),)),
        Requirement((Relation("c"), Relation("d"))),
    ]


def test_parse_flat_provides() -> None:
    assert parse_flat("tp-sh, tp-plugin (= 1.0), python3:any") == (
        Relation("tp-sh"),
        Relation("tp-plugin", "=", "1.0"),
        Relation("python3", None, None, "any"),
    )
