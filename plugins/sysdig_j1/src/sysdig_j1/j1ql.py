"""The subset of J1QL this project's questions and rules use: a parser, and a check of a query
against the data model, so that a renamed property breaks a test instead of a customer's alert.

    FIND <type or Class> [WITH <conditions>] [AS <alias>]
      (THAT [!]<VERB> <type or Class> [WITH <conditions>] [AS <alias>])*
      [RETURN <alias>[.<property>], ...]

Conditions are comparisons joined by AND / OR (AND binds tighter): `<property> <op> <value>`
with op one of = != > >= < <= ~= (contains), and values that are 'text' or "text", numbers,
true, false, null (undefined is read as null), or `date.now [± N <unit>]` (unit: minutes, hours,
days, weeks, months, years; singular too). Keywords are case-insensitive; entity types are
snake_case, classes CamelCase. `THAT` matches relationships in either direction, as in JupiterOne.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sysdig_j1.model import ENTITIES, MAPPED_TARGETS, RELATIONSHIPS

OPERATORS = ("!=", ">=", "<=", "~=", "=", ">", "<")
UNITS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000, "week": 7 * 86_400_000,
         "month": 30 * 86_400_000, "year": 365 * 86_400_000}
# Properties JupiterOne keeps on every graph object, besides those the data model declares.
METADATA = ("_key", "_type", "_class", "_id", "_createdOn", "_beginOn", "_endOn", "_deleted", "_source",
            "_scope", "_accountId", "_version", "displayName")
TOKEN = re.compile(r"""\s*(?:(?P<string>'[^']*'|"[^"]*")|(?P<op>!=|>=|<=|~=|=|>|<)|(?P<punct>[(),.|!+-])"""
                   r"""|(?P<number>\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))""")


class J1qlError(ValueError):
    """A query outside the subset, or naming something the data model does not have."""


@dataclass(frozen=True)
class Relative:
    """`date.now - N unit` (or `+`): epoch milliseconds when evaluated."""

    offset_ms: int  # subtracted from now (negative: in the future)


@dataclass(frozen=True)
class Comparison:
    property: str
    op: str
    value: object  # str | int | float | bool | None | Relative


@dataclass(frozen=True)
class Conditions:
    """OR of ANDs: each inner tuple must hold entirely."""

    any_of: tuple[tuple[Comparison, ...], ...]


@dataclass(frozen=True)
class Step:
    target: str  # an entity _type or a _class
    conditions: Conditions | None = None
    alias: str | None = None
    verb: str | None = None  # None for the FIND step; e.g. "HAS" for a THAT step
    negated: bool = False  # THAT !HAS


@dataclass(frozen=True)
class Query:
    steps: tuple[Step, ...]
    returns: tuple[tuple[str, str | None], ...] = field(default_factory=tuple)  # (alias, property)


def parse(text: str) -> Query:
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, position = text, [], 0
        while position < len(text):
            match = TOKEN.match(text, position)
            if not match or match.end() == position:
                if text[position:].strip():
                    raise J1qlError(f"cannot read {text[position:position + 20]!r} in {text!r}")
                break
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.at = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise J1qlError(f"unexpected end of {self.text!r}")
        self.at += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() in words:
            self.at += 1
            return token[1].upper()
        return None

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            raise J1qlError(f"expected {word} at {self._here()} in {self.text!r}")

    def identifier(self) -> str:
        kind, value = self.take()
        if kind != "word":
            raise J1qlError(f"expected a name, got {value!r} in {self.text!r}")
        return value

    def query(self) -> Query:
        self.expect("FIND")
        steps = [self.step(verb=None, negated=False)]
        while self.keyword("THAT"):
            negated = self.peek() == ("punct", "!") and bool(self.take())
            steps.append(self.step(verb=self.identifier().upper(), negated=negated))
        returns = []
        if self.keyword("RETURN"):
            while True:
                alias = self.identifier()
                prop = None
                if self.peek() == ("punct", "."):
                    self.take()
                    prop = self.identifier()
                returns.append((alias, prop))
                if self.peek() != ("punct", ","):
                    break
                self.take()
        if self.peek() is not None:
            raise J1qlError(f"unexpected {self.peek()[1]!r} at {self._here()} in {self.text!r}")
        return Query(tuple(steps), tuple(returns))

    def step(self, verb: str | None, negated: bool) -> Step:
        target = self.identifier()
        conditions = self.conditions() if self.keyword("WITH") else None
        alias = self.identifier() if self.keyword("AS") else None
        return Step(target, conditions, alias, verb, negated)

    def conditions(self) -> Conditions:
        groups, group = [], [self.comparison()]
        while True:
            joiner = self.keyword("AND", "OR")
            if joiner is None:
                break
            if joiner == "OR":
                groups.append(tuple(group))
                group = []
            group.append(self.comparison())
        groups.append(tuple(group))
        return Conditions(tuple(groups))

    def comparison(self) -> Comparison:
        prop = self.identifier()
        kind, op = self.take()
        if kind != "op":
            raise J1qlError(f"expected a comparison after {prop!r} in {self.text!r}")
        return Comparison(prop, op, self.value())

    def value(self) -> object:
        kind, token = self.take()
        if kind == "string":
            return token[1:-1]
        if kind == "number":
            return float(token) if "." in token else int(token)
        if kind == "word" and token.lower() in ("true", "false"):
            return token.lower() == "true"
        if kind == "word" and token.lower() in ("null", "undefined"):
            return None
        if kind == "word" and token.lower() == "date" and self.peek() == ("punct", ".") and self.take():
            if self.identifier().lower() != "now":
                raise J1qlError(f"only date.now is supported, in {self.text!r}")
            if self.peek() not in (("punct", "-"), ("punct", "+")):
                return Relative(0)
            sign = -1 if self.take()[1] == "+" else 1
            kind, amount = self.take()
            unit = self.identifier().lower().removesuffix("s")
            if kind != "number" or unit not in UNITS:
                raise J1qlError(f"expected date.now ± <number> <unit> in {self.text!r}")
            return Relative(sign * int(float(amount) * UNITS[unit]))
        raise J1qlError(f"expected a value, got {token!r} in {self.text!r}")

    def _here(self) -> str:
        token = self.peek()
        return repr(token[1]) if token else "the end"


# -- against the data model ---------------------------------------------------------------------
def check(query: Query) -> list[str]:
    """Everything the query names that the data model does not have (empty: the query is sound)."""
    properties = _properties()
    classes = {e.cls for e in (*ENTITIES, *MAPPED_TARGETS)}
    problems: list[str] = []
    aliases: dict[str, set[str]] = {}
    for number, step in enumerate(query.steps):
        if step.target in properties or step.target in classes:
            candidates = _types_of(step.target)
        else:
            problems.append(f"no entity type or class {step.target!r}")
            continue
        known = set(METADATA).union(*(properties[t] for t in candidates))
        if step.verb is not None:
            previous = query.steps[number - 1]
            if not _related(previous.target, step.target, step.verb):
                problems.append(f"no {step.verb} relationship between {previous.target!r} and {step.target!r}")
        for group in step.conditions.any_of if step.conditions else ():
            for comparison in group:
                if comparison.property not in known:
                    problems.append(f"{step.target!r} has no property {comparison.property!r}")
        if step.alias:
            aliases[step.alias] = known
    for alias, prop in query.returns:
        if alias not in aliases:
            problems.append(f"RETURN names {alias!r}, which no AS defines")
        elif prop is not None and prop not in aliases[alias]:
            problems.append(f"RETURN {alias}.{prop}: no such property")
    return problems


def _properties() -> dict[str, set[str]]:
    """Property names per entity type: ours, and the targets our mapped relationships reach."""
    return {**{e.type: {p.name for p in e.properties} for e in ENTITIES},
            **{t.type: {name for name, _ in t.properties} for t in MAPPED_TARGETS}}


def types_read(text: str) -> set[str]:
    """The entity types a query reads: each step's type, or every type of its class."""
    return set().union(*(_types_of(step.target) for step in parse(text).steps))


def _types_of(target: str) -> set[str]:
    return {e.type for e in (*ENTITIES, *MAPPED_TARGETS) if target in (e.type, e.cls)}


def _related(a: str, b: str, verb: str) -> bool:
    """Whether the model has a `verb` relationship between the two, in either direction."""
    left, right = _types_of(a), _types_of(b)
    return any(r.cls == verb and ((r.source.type in left and r.target.type in right)
                                  or (r.source.type in right and r.target.type in left)) for r in RELATIONSHIPS)
