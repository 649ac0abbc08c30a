"""rpm's rich (boolean) dependencies: parsing, and the clauses the resolver applies.

A rich dependency is a parenthesised expression over simple dependencies
(``name [op version]``) with the operators of rpm 4.13/4.14: ``and``, ``or``,
``if``, ``if … else``, ``unless``, ``unless … else``, ``with`` and ``without``.
The grammar follows rpm's own parser (lib/rpmds.cc, rpmrichParse): operands
are simple dependencies or nested expressions, only ``and``/``or``/``with``
chain (``(a or b or c)``), ``else`` only follows ``if``/``unless``, and a name
may hold balanced parentheses (``libc.so.6()(64bit)``).

Meaning, as rpm (lib/depends.cc) and libsolv (src/cplxdeps.c) evaluate it:

- ``A if B`` is ``A or not B``; ``A if B else C`` is ``(A or not B) and (C or B)``;
- ``A unless B`` is ``A and not B``; ``A unless B else C`` is
  ``(A and not B) or (C and B)``;
- ``A with B`` is one package satisfying both, ``A without B`` one package
  satisfying A and not B: these are sets of packages, not conditions on the
  installed set, and stay whole as *atoms* (so do ``or`` groups of atoms).

`clauses` turns a Requires-like expression into a conjunction of `Clause`s
(its conjunctive normal form, as libsolv's normalisation makes it): "one of
the `goal` atoms must be installed, provided every `when` atom is satisfied".
A negated atom is a condition; a positive one is something that may be
installed, even one met in the condition of an ``if``: ``(b if c else d)``
needs ``(d or c)`` when nothing is chosen yet, and libsolv (so dnf) meets it
by name order, installing c and then b; so do we. A clause with no positive
atom forbids something (``(A unless B)`` forbids B); the resolver only adds
packages and cannot enforce that, so such clauses are dropped. `triggers`
turns a Supplements expression into the alternative sets of atoms that make
it true (disjunctive normal form).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import product

OPERATORS = ("and", "or", "if", "unless", "else", "with", "without")
_CHAINING = ("and", "or", "with")
_COMPARISONS = {
    "<": "<",
    "<=": "<=",
    "=<": "<=",
    "=": "=",
    "==": "=",
    ">=": ">=",
    "=>": ">=",
    ">": ">",
}


class RichDepError(ValueError):
    """Text that rpm would refuse as a rich dependency."""


@dataclass(frozen=True, slots=True)
class Simple:
    """A plain dependency: ``name``, or ``name op version`` (op spelt as rpm does)."""

    name: str
    op: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.version}" if self.op else self.name


@dataclass(frozen=True, slots=True)
class Rich:
    """``(a op b [op c …])``; for if/unless a third operand is the ``else`` branch."""

    op: str
    operands: tuple[Node, ...]

    def __str__(self) -> str:
        words = [_text(self.operands[0])]
        for index, operand in enumerate(self.operands[1:], start=1):
            word = "else" if self.op in ("if", "unless") and index == 2 else self.op
            words += [word, _text(operand)]
        return "(" + " ".join(words) + ")"


Node = Simple | Rich


def _text(node: Node) -> str:
    return str(node)


# ---------------------------------------------------------------- parsing


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and (
            self.text[self.pos].isspace() or self.text[self.pos] == ","
        ):
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def word(self) -> str:
        """A token up to white space or an unbalanced ')' (rpm's SKIPNONWHITEX)."""
        start, depth = self.pos, 0
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == ",":
                break
            if char == ")":
                if depth <= 0:
                    break
                depth -= 1
            elif char == "(":
                depth += 1
            self.pos += 1
        return text[start : self.pos]

    def fail(self, message: str) -> RichDepError:
        return RichDepError(f"{message} in rich dependency {self.text!r}")


def _simple(scanner: _Scanner) -> Simple:
    name = scanner.word()
    if not name:
        raise scanner.fail("name required")
    scanner.skip_space()
    mark = scanner.pos
    op = _COMPARISONS.get(scanner.word())
    if op is None:
        scanner.pos = mark
        return Simple(name)
    scanner.skip_space()
    version = scanner.word()
    if not version:
        raise scanner.fail("version required")
    return Simple(name, op, version)


def _expression(scanner: _Scanner) -> Rich | Node:
    if scanner.peek() != "(":
        raise scanner.fail("'(' expected")
    scanner.pos += 1
    operands: list[Node] = []
    op: str | None = None
    chain: str | None = None
    while True:
        scanner.skip_space()
        if scanner.peek() == ")":
            raise scanner.fail("missing operand" if operands else "empty expression")
        operands.append(_expression(scanner) if scanner.peek() == "(" else _simple(scanner))
        scanner.skip_space()
        if not scanner.peek():
            raise scanner.fail("unterminated expression")
        if scanner.peek() == ")":
            scanner.pos += 1
            break
        word = scanner.word()
        if word not in OPERATORS:
            raise scanner.fail(f"unknown operator {word!r}")
        if word == "else":
            if chain not in ("if", "unless") or len(operands) != 2:
                raise scanner.fail("'else' without 'if' or 'unless'")
            chain = "else"
            continue
        if chain is not None and (word != chain or word not in _CHAINING):
            raise scanner.fail("cannot chain different operators")
        op = chain = word
    if op is None:
        return operands[0]  # "(name >= 1)" is a simple dependency in parentheses
    return Rich(op, tuple(operands))


def parse(text: str) -> Node:
    """The expression `text` (a plain dependency comes back as `Simple`)."""
    scanner = _Scanner(text.strip())
    if scanner.peek() != "(":
        return _simple(scanner)
    node = _expression(scanner)
    scanner.skip_space()
    if scanner.pos != len(scanner.text):
        raise scanner.fail("trailing text")
    return node


# ---------------------------------------------------------------- atoms and sets


def is_atom(node: Node) -> bool:
    """Whether `node` is a set of packages: simple, with/without, or an `or` of atoms."""
    if isinstance(node, Simple):
        return True
    if node.op in ("with", "without"):
        return True
    return node.op == "or" and all(is_atom(operand) for operand in node.operands)


def leaf_names(node: Node) -> set[str]:
    """Names any package satisfying the atom `node` must provide one of."""
    if isinstance(node, Simple):
        return {node.name}
    if node.op in ("with", "without"):
        return leaf_names(node.operands[0])
    names: set[str] = set()
    for operand in node.operands:
        names |= leaf_names(operand)
    return names


def simples(node: Node) -> Iterable[Simple]:
    """Every plain dependency inside `node`."""
    if isinstance(node, Simple):
        yield node
        return
    for operand in node.operands:
        yield from simples(operand)


def matches(node: Node, satisfies: Callable[[Simple], bool]) -> bool:
    """Whether one package satisfies `node`, judging its plain dependencies with `satisfies`.

    Used for atoms (exact) and for rich Conflicts (approximation: every operand
    is judged on the same single package).
    """
    if isinstance(node, Simple):
        return satisfies(node)
    first, *rest = node.operands
    if node.op in ("and", "with"):
        return all(matches(operand, satisfies) for operand in node.operands)
    if node.op == "or":
        return any(matches(operand, satisfies) for operand in node.operands)
    if node.op == "without":
        return matches(first, satisfies) and not matches(rest[0], satisfies)
    condition = matches(rest[0], satisfies)
    if node.op == "if":
        if condition:
            return matches(first, satisfies)
        return matches(rest[1], satisfies) if len(rest) > 1 else True
    # unless
    if not condition:
        return matches(first, satisfies)
    return matches(rest[1], satisfies) if len(rest) > 1 else False


# ---------------------------------------------------------------- normal forms

# A literal: (atom, positive).
_Literal = tuple[Node, bool]
_Cnf = list[frozenset[_Literal]]


def _concat(*parts: _Cnf) -> _Cnf:
    return [clause for part in parts for clause in part]


def _product(*parts: _Cnf) -> _Cnf:
    return [frozenset().union(*combo) for combo in product(*parts)]


def _cnf(node: Node, positive: bool) -> _Cnf:
    if is_atom(node):
        return [frozenset({(node, positive)})]
    assert isinstance(node, Rich)
    ops = node.operands
    if node.op in ("and", "or"):
        parts = [_cnf(operand, positive) for operand in ops]
        conjunctive = (node.op == "and") == positive
        return _concat(*parts) if conjunctive else _product(*parts)

    def a(sign: bool) -> _Cnf:
        return _cnf(ops[0], sign)

    def b(sign: bool) -> _Cnf:
        return _cnf(ops[1], sign)

    def c(sign: bool) -> _Cnf:
        return _cnf(ops[2], sign)

    # X or Y is _product(X, Y), X and Y is _concat(X, Y); polarities are absolute.
    if node.op == "if":
        if len(ops) == 2:
            if positive:  # A or not B
                return _product(a(True), b(False))
            return _concat(a(False), b(True))  # not A and B
        if positive:  # (A or not B) and (C or B)
            return _concat(_product(a(True), b(False)), _product(c(True), b(True)))
        # (not A and B) or (not C and not B)
        return _product(_concat(a(False), b(True)), _concat(c(False), b(False)))
    # unless
    if len(ops) == 2:
        if positive:  # A and not B
            return _concat(a(True), b(False))
        return _product(a(False), b(True))  # not A or B
    if positive:  # (A and not B) or (C and B)
        return _product(_concat(a(True), b(False)), _concat(c(True), b(True)))
    # (not A or B) and (not C or not B)
    return _concat(_product(a(False), b(True)), _product(c(False), b(False)))


def _atom_union(atoms: list[Node]) -> Node:
    if len(atoms) == 1:
        return atoms[0]
    flat: list[Node] = []
    for atom in atoms:
        if isinstance(atom, Rich) and atom.op == "or":
            flat.extend(atom.operands)
        else:
            flat.append(atom)
    return Rich("or", tuple(flat))


def _key(node: Node) -> str:
    return str(node)


@dataclass(frozen=True, slots=True)
class Clause:
    """`goal` (an atom: alternatives come as one ``a or b``) is needed once every `when` holds."""

    goal: Node
    when: tuple[Node, ...] = ()


def clauses(node: Node) -> list[Clause]:
    """The Requires-like expression `node` as clauses, all of which must hold."""
    found: list[Clause] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for clause in _cnf(node, True):
        signs: dict[str, set[bool]] = {}
        for atom, positive in clause:
            signs.setdefault(_key(atom), set()).add(positive)
        if any(len(both) > 1 for both in signs.values()):
            continue  # X or not X: always true
        ordered = sorted(clause, key=lambda lit: _key(lit[0]))
        goals = [atom for atom, positive in ordered if positive]
        when = tuple(atom for atom, positive in ordered if not positive)
        if not goals:
            continue  # "not all of `when`": a prohibition, not something to install
        goal = _atom_union(goals)
        signature = (_key(goal), tuple(map(_key, when)))
        if signature not in seen:
            seen.add(signature)
            found.append(Clause(goal, when))
    return found


@dataclass(frozen=True, slots=True)
class Trigger:
    """A way for a Supplements expression to be true: every `holds` atom, no `fails` atom."""

    holds: tuple[Node, ...]
    fails: tuple[Node, ...] = ()


def triggers(node: Node) -> list[Trigger]:
    """The disjunctive normal form of `node`: it holds when any returned trigger does.

    Terms that need nothing installed (only negations) are left out: a
    supplement is a reason to add a package because of others.
    """
    found: list[Trigger] = []
    for clause in _cnf(node, False):  # not-node in CNF = node in DNF, negated
        ordered = sorted(clause, key=lambda lit: _key(lit[0]))
        holds = tuple(atom for atom, positive in ordered if not positive)
        fails = tuple(atom for atom, positive in ordered if positive)
        if holds and not {_key(a) for a in holds} & {_key(a) for a in fails}:
            found.append(Trigger(holds, fails))
    return found
