"""Request language: ``smiling and (eyeglasses or wearing_hat) and not bald`` as a tree of attribute terms.

Grammar::

    query  := or_expr
    or_expr  := and_expr ("or" and_expr)*
    and_expr := unary ("and" unary)*
    unary  := "not" unary | primary
    primary := "(" or_expr ")" | term
    term   := NAME | LABELSET "." NAME | "rule" ":" NAME
    NAME   := [A-Za-z][A-Za-z0-9_]{0,63}
    LABELSET := [A-Za-z0-9][A-Za-z0-9_-]{0,63}

Keywords are case-insensitive; ``and``, ``or`` and ``not`` are never names, ``rule`` is a keyword only before
``:`` (an attribute may be called ``rule``). Precedence is not > and > or. The parser flattens ``a and (b and c)``
into one And and simplifies ``not not x`` to x, so equal meanings written alike give equal trees. Names keep the case
they were typed in; ``resolve`` matches attribute names case-insensitively and label-set and rule names exactly (they
are lowercase identifiers). Hostile input is refused before it costs anything: the length is checked first, and
parentheses and ``not`` nest at most MAX_DEPTH deep, far below Python's recursion limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conditioning.celeba import celeba_hint
from conditioning.specs import SpecError

MAX_QUERY_CHARS = 2000
MAX_TERMS = 32
MAX_DEPTH = 32
MAX_NAME_CHARS = 64
KEYWORDS = frozenset({"and", "or", "not"})
# a word is a label-set name (as the registry allows: a leading digit, '-') or an attribute / rule name (identifiers)
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*|[().:]|[ \t\r\n]+", re.ASCII)
IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)


@dataclass(frozen=True)
class Term:
    name: str  # attribute (or rule) name as typed
    labelset: str | None  # "faces" in faces.smiling; None for a bare name or a rule
    rule: bool  # rule:bright
    pos: int  # 0-based offset of the term's first character in the query


@dataclass(frozen=True)
class Ref:
    """A term resolved to one served label set and its canonical attribute name."""

    labelset: str
    attr: str
    pos: int


@dataclass(frozen=True)
class Not:
    child: Node
    pos: int


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Term | Ref | Not | And | Or
PRECEDENCE = {Or: 1, And: 2, Not: 3}


def _join(cls: type[And] | type[Or], children: list[Node]) -> Node:
    """One And (Or) over ``children``, splicing in the children of nested And (Or) nodes."""
    flat = [g for c in children for g in (c.children if isinstance(c, cls) else (c,))]
    return flat[0] if len(flat) == 1 else cls(tuple(flat))


class _Parser:
    """Recursive descent over (token, position) pairs; the last token is ("", len(text)), the end."""

    def __init__(self, text: str):
        self.text, self.i, self.depth, self.n_terms = text, 0, 0, 0
        if len(text) > MAX_QUERY_CHARS:
            self.fail(MAX_QUERY_CHARS, f"query longer than {MAX_QUERY_CHARS} characters")
        self.tokens = []
        pos = 0
        while pos < len(text):
            m = TOKEN_RE.match(text, pos)
            if m is None:
                self.fail(pos, f"invalid character {text[pos]!r} at position {pos}")
            if len(m.group()) > MAX_NAME_CHARS and m.group()[0].isalnum():
                self.fail(pos, f"name longer than {MAX_NAME_CHARS} characters at position {pos}")
            if not m.group().isspace():
                self.tokens.append((m.group(), pos))
            pos = m.end()
        self.tokens.append(("", len(text)))

    def peek(self, ahead: int = 0) -> tuple[str, int]:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def keyword(self, word: str) -> bool:
        return self.peek()[0].lower() == word

    def fail(self, pos: int, message: str):
        raise SpecError("invalid_query", message, {"position": pos, "query": self.text[:200]})

    def expected(self, what: str):
        token, pos = self.peek()
        self.fail(pos, f"expected {what} at position {pos}, found {repr(token) if token else 'the end of the query'}")

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(pos, f"parentheses and 'not' nest deeper than {MAX_DEPTH} at position {pos}")

    def or_expr(self) -> Node:
        return self.chain("or", Or, lambda: self.chain("and", And, self.unary))

    def chain(self, word: str, cls: type[And] | type[Or], operand) -> Node:
        """``operand (word operand)*`` as one flattened And or Or."""
        children = [operand()]
        while self.keyword(word):
            self.i += 1
            children.append(operand())
        return _join(cls, children)

    def unary(self) -> Node:
        if not self.keyword("not"):
            return self.primary()
        pos = self.peek()[1]
        self.enter(pos)
        self.i += 1
        child = self.unary()
        self.depth -= 1
        return child.child if isinstance(child, Not) else Not(child, pos)

    def primary(self) -> Node:
        token, pos = self.peek()
        if token != "(":
            return self.term()
        self.enter(pos)
        self.i += 1
        node = self.or_expr()
        if not self.peek()[0]:
            self.fail(len(self.text), f"unclosed '(' opened at position {pos}")
        if self.peek()[0] != ")":
            self.expected("'and', 'or' or ')'")
        self.i += 1
        self.depth -= 1
        return node

    def name(self, what: str, labelset: bool = False) -> str:
        """The next word as a name: an identifier, or with ``labelset`` any word the registry allows."""
        token = self.peek()[0]
        if not (token[:1].isalnum() if labelset else IDENT_RE.fullmatch(token)) or token.lower() in KEYWORDS:
            self.expected(what)
        self.i += 1
        return token

    def term(self) -> Term:
        pos = self.peek()[1]
        self.n_terms += 1
        if self.n_terms > MAX_TERMS:
            self.fail(pos, f"more than {MAX_TERMS} terms: term {self.n_terms} at position {pos}")
        if self.keyword("rule") and self.peek(1)[0] == ":":
            self.i += 2
            return Term(self.name("a rule name after 'rule:'"), None, True, pos)
        first = self.name("a name, '(' or 'not'", labelset=self.peek(1)[0] == ".")
        if self.peek()[0] != ".":
            return Term(first, None, False, pos)
        self.i += 1
        return Term(self.name("an attribute name after '.'"), first, False, pos)


def parse(text: str) -> Node:
    """The tree of a query; any syntax error is an ``invalid_query`` SpecError with the offending position."""
    parser = _Parser(text)
    if not parser.peek()[0]:
        parser.fail(len(text), "empty query")
    node = parser.or_expr()
    token, pos = parser.peek()
    if token == ")":
        parser.fail(pos, f"unexpected ')' at position {pos}")
    if token:
        parser.expected("'and', 'or' or the end of the query")
    return node


def to_text(node: Node) -> str:
    """Canonical text: lowercase keywords, names as typed, parentheses only where precedence needs them."""
    if isinstance(node, Ref):
        return f"{node.labelset}.{node.attr}"
    if isinstance(node, Term):
        return f"rule:{node.name}" if node.rule else f"{node.labelset}.{node.name}" if node.labelset else node.name
    children = (node.child,) if isinstance(node, Not) else node.children
    texts = [f"({to_text(c)})" if PRECEDENCE.get(type(c), 4) < PRECEDENCE[type(node)] else to_text(c) for c in children]
    return f"not {texts[0]}" if isinstance(node, Not) else (" or " if isinstance(node, Or) else " and ").join(texts)


def terms(node: Node) -> list[Term | Ref]:
    """The leaves in order of appearance (Terms, or Refs in a resolved tree)."""
    if isinstance(node, Term | Ref):
        return [node]
    return terms(node.child) if isinstance(node, Not) else [t for c in node.children for t in terms(c)]


def to_nnf(node: Node) -> Node:
    """Negation normal form by De Morgan: Not only wraps leaves, each at the position of the 'not' that reached it."""
    return _nnf(node, False, 0)


def _nnf(node: Node, negate: bool, pos: int) -> Node:
    if isinstance(node, Not):
        return _nnf(node.child, not negate, node.pos)
    if isinstance(node, And | Or):
        cls = {And: Or, Or: And}[type(node)] if negate else type(node)
        return _join(cls, [_nnf(c, negate, pos) for c in node.children])
    return Not(node, pos) if negate else node


def _attr(catalog: dict[str, list[str]], labelset: str | None, name: str) -> str | None:
    """The canonical spelling of attribute ``name`` in ``labelset``, or None."""
    return next((a for a in catalog.get(labelset, ()) if a.lower() == name.lower()), None)


def _listed(items: list[str], last: str) -> str:
    return ", ".join(items[:-1]) + f" {last} {items[-1]}" if len(items) > 1 else items[0]


def _ref(term: Term, catalog: dict[str, list[str]], rules: dict[str, list[str]], default: str | None) -> Ref:
    """The one (label set, attribute) a term means; raises when it means none or several."""
    pos, at = term.pos, f"at position {term.pos}"
    if term.rule:
        found = [(ls, catalog[ls][0]) for ls in rules.get(term.name, ()) if ls in catalog]
        if not found:
            names = sorted(r for r, sets in rules.items() if any(ls in catalog for ls in sets))
            message = f"unknown rule '{term.name}' {at}; available: {', '.join(names) or 'none'}"
            raise SpecError("unknown_rule", message, {"position": pos, "rule": term.name, "available": names})
    elif term.labelset is not None and term.labelset not in catalog:
        names = sorted(catalog)
        message = f"unknown label set '{term.labelset}' {at}; served: {', '.join(names)}"
        raise SpecError("unknown_labelset", message, {"position": pos, "labelset": term.labelset, "available": names})
    else:
        sets = [term.labelset] if term.labelset else [default] if _attr(catalog, default, term.name) else list(catalog)
        found = [(ls, a) for ls in sets if (a := _attr(catalog, ls, term.name)) is not None]
    if not found:
        valid = list(catalog[term.labelset]) if term.labelset else {k: list(v) for k, v in catalog.items()}
        listing = ", ".join(valid) if term.labelset else "; ".join(f"{k}: {', '.join(v)}" for k, v in valid.items())
        served = (a for names in catalog.values() for a in names)  # a qualified name may be served elsewhere
        message = f"unknown attribute '{to_text(term)}' {at}; valid: {listing}" + celeba_hint([term.name], served)
        raise SpecError("unknown_attributes", message, {"position": pos, "unknown": [term.name], "valid": valid})
    if len(found) > 1:
        owners = _listed([ls for ls, _ in found], "and")
        what = f"'rule:{term.name}' {at} was trained into" if term.rule else f"'{term.name}' {at} is an attribute of"
        written = _listed([f"{ls}.{a if term.rule else term.name}" for ls, a in found], "or")
        details = {"position": pos, "candidates": [f"{ls}.{a}" for ls, a in found]}
        raise SpecError("ambiguous_attribute", f"{what} {owners}; write {written}", details)
    return Ref(*found[0], pos)


def resolve(
    node: Node, catalog: dict[str, list[str]], rules: dict[str, list[str]] | None = None, default: str | None = None
) -> Node:
    """The same tree with each Term a Ref into ``catalog`` (served label set -> attribute names); ``rules`` maps a
    rule name to the label sets trained from it, ``default`` is the set a bare name tries first."""
    if isinstance(node, Not):
        return Not(resolve(node.child, catalog, rules, default), node.pos)
    if isinstance(node, And | Or):
        return type(node)(tuple(resolve(c, catalog, rules, default) for c in node.children))
    return node if isinstance(node, Ref) else _ref(node, catalog, rules or {}, default)
