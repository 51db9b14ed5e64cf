"""The request language: precedence, flattening, canonical text, NNF, resolution, errors that point at a position."""

import dataclasses

import pytest

from conditioning.query import MAX_TERMS, And, Not, Or, Ref, Term, parse, resolve, terms, to_nnf, to_text
from conditioning.specs import SpecError

CATALOG = {
    "faces": ["Smiling", "Eyeglasses", "Wearing_Hat", "Bald", "Black_Hair"],
    "hair_colour": ["Black_Hair", "Blond_Hair"],
    "bright_v1": ["Bright"],
    "bright_v2": ["Bright"],
    "warm": ["Warm"],
}
RULES = {"bright": ["bright_v1", "bright_v2"], "warm": ["warm"], "gone": ["not_served"]}


def t(name: str, labelset: str | None = None, rule: bool = False) -> Term:
    return Term(name, labelset, rule, 0)


def unpos(node):
    """The tree with every position 0, to compare shapes."""
    if isinstance(node, Term | Ref | Not):
        fields = {"pos": 0} | ({"child": unpos(node.child)} if isinstance(node, Not) else {})
        return dataclasses.replace(node, **fields)
    return type(node)(tuple(unpos(c) for c in node.children))


def error(call, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize(
    "query, tree",
    [
        ("a or b and not c", Or((t("a"), And((t("b"), Not(t("c"), 0)))))),
        ("(a or b) and c", And((Or((t("a"), t("b"))), t("c")))),
        ("not a and b", And((Not(t("a"), 0), t("b")))),
        ("not (a and b)", Not(And((t("a"), t("b"))), 0)),
        ("a and b and c", And((t("a"), t("b"), t("c")))),
        ("a or (b or c) or d", Or((t("a"), t("b"), t("c"), t("d")))),
        ("(a and b) and (c and d)", And((t("a"), t("b"), t("c"), t("d")))),
        ("((a))", t("a")),
        ("not not a", t("a")),
        ("not (not a)", t("a")),
        ("NOT a AnD b Or c", Or((And((Not(t("a"), 0), t("b"))), t("c")))),
        ("faces.Smiling and RULE : bright", And((t("Smiling", "faces"), t("bright", rule=True)))),
        ("rule and faces.rule", And((t("rule"), t("rule", "faces")))),
        ("rule.x", t("x", "rule")),
        (" \tsmiling\n", t("smiling")),
    ],
)
def test_parse_shapes(query, tree):
    assert unpos(parse(query)) == tree


def test_positions_of_terms_and_nots():
    tree = parse("smiling and (eyeglasses or faces.wearing_hat) and not rule:bright")
    positions = [("smiling", 0), ("eyeglasses", 13), ("wearing_hat", 27), ("bright", 54)]
    assert [(x.name, x.pos) for x in terms(tree)] == positions
    assert tree.children[2].pos == 50


@pytest.mark.parametrize(
    "query, position, message",
    [
        ("", 0, "empty query"),
        ("   ", 3, "empty query"),
        ("smiling and (a or b) )", 21, "unexpected ')' at position 21"),
        ("smiling and (a or )", 18, "expected a name, '(' or 'not' at position 18, found ')'"),
        ("smiling and", 11, "expected a name, '(' or 'not' at position 11, found the end of the query"),
        ("and smiling", 0, "expected a name, '(' or 'not' at position 0, found 'and'"),
        ("not or", 4, "expected a name, '(' or 'not' at position 4, found 'or'"),
        ("a and ((b or c) and d", 21, "unclosed '(' opened at position 6"),
        ("(a b)", 3, "expected 'and', 'or' or ')' at position 3, found 'b'"),
        ("a b", 2, "expected 'and', 'or' or the end of the query at position 2, found 'b'"),
        ("faces.a.b", 7, "expected 'and', 'or' or the end of the query at position 7, found '.'"),
        ("faces.", 6, "expected an attribute name after '.' at position 6, found the end of the query"),
        ("faces.not", 6, "expected an attribute name after '.' at position 6, found 'not'"),
        ("rule:(", 5, "expected a rule name after 'rule:' at position 5, found '('"),
        ("smiling & x", 8, "invalid character '&' at position 8"),
        ("a and ß", 6, "invalid character 'ß' at position 6"),
        ("a and 1b", 6, "expected a name, '(' or 'not' at position 6, found '1b'"),
        ("my-faces.x-y", 9, "expected an attribute name after '.' at position 9, found 'x-y'"),
        ("a or _b", 5, "invalid character '_' at position 5"),
        ("a or -b", 5, "invalid character '-' at position 5"),
        ("a or " + "x" * 65, 5, "name longer than 64 characters at position 5"),
    ],
)
def test_syntax_errors_point_at_the_offending_position(query, position, message):
    e = error(parse, query)
    assert (e.code, str(e), e.details) == ("invalid_query", message, {"position": position, "query": query})


def test_a_64_character_name_is_fine():
    assert parse("x" * 64) == Term("x" * 64, None, False, 0)


@pytest.mark.parametrize(
    "query, position",
    [
        ("(" * 10_000, 2000),  # refused by length before any parsing
        ("(" * 1999 + "a", 32),  # the 33rd '('
        ("not " * 499 + "a", 128),  # the 33rd 'not'
        ("(not " * 16 + "(a" + ")" * 17, 80),  # the 33rd of '(' and 'not' together
        (" or ".join(f"x{i}" for i in range(MAX_TERMS + 1)), 32 * 4 + sum(len(f"x{i}") for i in range(32))),
    ],
)
def test_limits_refuse_hostile_queries_without_recursing(query, position):
    e = error(parse, query)
    assert (e.code, e.details["position"], e.details["query"]) == ("invalid_query", position, query[:200])


def test_32_terms_and_32_levels_are_allowed():
    assert len(terms(parse(" and ".join(f"x{i}" for i in range(MAX_TERMS))))) == MAX_TERMS
    assert parse("(" * 32 + "a" + ")" * 32) == Term("a", None, False, 32)


@pytest.mark.parametrize(
    "query, text",
    [
        ("smiling AND (eyeglasses OR hat) and NOT bald", "smiling and (eyeglasses or hat) and not bald"),
        ("((a or b)) and c", "(a or b) and c"),
        ("a or (b and c)", "a or b and c"),
        ("not (a or b)", "not (a or b)"),
        ("not (not a and b)", "not (not a and b)"),
        ("(not a) or (not b)", "not a or not b"),
        ("Faces . Smiling and rule:Bright", "Faces.Smiling and rule:Bright"),
        ("(a or b) and (c or not (d and e))", "(a or b) and (c or not (d and e))"),
        ("a and (b or (c and (d or e)))", "a and (b or c and (d or e))"),
        ("not not not a", "not a"),
        ("rule", "rule"),
        ("(a)", "a"),
    ],
)
def test_to_text_is_canonical_and_parses_back(query, text):
    assert to_text(parse(query)) == text
    assert unpos(parse(to_text(parse(query)))) == unpos(parse(query))


@pytest.mark.parametrize(
    "query, nnf",
    [
        ("not (a and b)", "not a or not b"),
        ("not (a or b)", "not a and not b"),
        ("not (a and not b)", "not a or b"),
        ("not (a or (b and c))", "not a and (not b or not c)"),
        ("not (not (a or b) and c)", "a or b or not c"),
        ("a and not (b and c) and d", "a and (not b or not c) and d"),
        ("not (a and b) or not (c and d)", "not a or not b or not c or not d"),
        ("a or not b", "a or not b"),
    ],
)
def test_nnf_pushes_negation_to_the_terms(query, nnf):
    tree = to_nnf(parse(query))
    assert to_text(tree) == nnf
    assert unpos(tree) == unpos(parse(nnf))  # flat: the same tree the canonical text parses to


def test_nnf_negations_keep_the_position_of_their_not():
    assert to_nnf(parse("a and not (b or c)")) == And(
        (Term("a", None, False, 0), Not(Term("b", None, False, 11), 6), Not(Term("c", None, False, 16), 6))
    )


@pytest.mark.parametrize(
    "query, default, refs",
    [
        ("smiling", None, [("faces", "Smiling")]),  # unique across served sets
        ("SMILING and not blond_hair", None, [("faces", "Smiling"), ("hair_colour", "Blond_Hair")]),
        ("black_hair", "faces", [("faces", "Black_Hair")]),  # the default set wins an ambiguity
        ("black_hair", "hair_colour", [("hair_colour", "Black_Hair")]),
        ("blond_hair", "faces", [("hair_colour", "Blond_Hair")]),  # not in the default set: unique elsewhere
        ("hair_colour.black_HAIR or faces.black_hair", None, [("hair_colour", "Black_Hair"), ("faces", "Black_Hair")]),
        ("rule:warm", None, [("warm", "Warm")]),
    ],
)
def test_resolve(query, default, refs):
    tree = parse(query)
    resolved = resolve(tree, CATALOG, RULES, default=default)
    assert [(r.labelset, r.attr) for r in terms(resolved)] == refs
    assert [r.pos for r in terms(resolved)] == [x.pos for x in terms(tree)]


def test_resolve_keeps_the_tree_shape():
    resolved = resolve(parse("smiling and not (eyeglasses or faces.bald)"), CATALOG)
    assert resolved == And(
        (
            Ref("faces", "Smiling", 0),
            Not(Or((Ref("faces", "Eyeglasses", 17), Ref("faces", "Bald", 31))), 12),
        )
    )
    assert to_text(resolved) == "faces.Smiling and not (faces.Eyeglasses or faces.Bald)"


@pytest.mark.parametrize(
    "query, default, code, message, details",
    [
        (
            "black_hair",
            None,
            "ambiguous_attribute",
            "'black_hair' at position 0 is an attribute of faces and hair_colour; "
            "write faces.black_hair or hair_colour.black_hair",
            {"position": 0, "candidates": ["faces.Black_Hair", "hair_colour.Black_Hair"]},
        ),
        (
            "smiling and black_hair",
            "warm",
            "ambiguous_attribute",
            "'black_hair' at position 12 is an attribute of faces and hair_colour; "
            "write faces.black_hair or hair_colour.black_hair",
            {"position": 12, "candidates": ["faces.Black_Hair", "hair_colour.Black_Hair"]},
        ),
        (
            "smiling and rule:bright",
            None,
            "ambiguous_attribute",
            "'rule:bright' at position 12 was trained into bright_v1 and bright_v2; "
            "write bright_v1.Bright or bright_v2.Bright",
            {"position": 12, "candidates": ["bright_v1.Bright", "bright_v2.Bright"]},
        ),
        (
            "smiling or hat.red",
            None,
            "unknown_labelset",
            "unknown label set 'hat' at position 11; served: bright_v1, bright_v2, faces, hair_colour, warm",
            {"position": 11, "labelset": "hat", "available": sorted(CATALOG)},
        ),
        (
            "Faces.smiling",
            None,
            "unknown_labelset",
            "unknown label set 'Faces' at position 0; served: bright_v1, bright_v2, faces, hair_colour, warm",
            {"position": 0, "labelset": "Faces", "available": sorted(CATALOG)},
        ),
        (
            "not hair_colour.smiling",
            None,
            "unknown_attributes",
            "unknown attribute 'hair_colour.smiling' at position 4; valid: Black_Hair, Blond_Hair",
            {"position": 4, "unknown": ["smiling"], "valid": ["Black_Hair", "Blond_Hair"]},
        ),
        (
            "a and x",
            "faces",
            "unknown_attributes",
            "unknown attribute 'a' at position 0; valid: faces: Smiling, Eyeglasses, Wearing_Hat, Bald, Black_Hair; "
            "hair_colour: Black_Hair, Blond_Hair; bright_v1: Bright; bright_v2: Bright; warm: Warm",
            {"position": 0, "unknown": ["a"], "valid": CATALOG},
        ),
        (
            "smiling and rule:cold",
            None,
            "unknown_rule",
            "unknown rule 'cold' at position 12; available: bright, warm",
            {"position": 12, "rule": "cold", "available": ["bright", "warm"]},
        ),
        (
            "rule:gone",
            None,
            "unknown_rule",
            "unknown rule 'gone' at position 0; available: bright, warm",
            {"position": 0, "rule": "gone", "available": ["bright", "warm"]},
        ),
    ],
)
def test_resolve_errors(query, default, code, message, details):
    e = error(resolve, parse(query), CATALOG, RULES, default=default)
    assert (e.code, str(e), e.details) == (code, message, details)


def test_rules_are_optional():
    e = error(resolve, parse("rule:warm"), CATALOG)
    assert (e.code, e.details["available"]) == ("unknown_rule", [])
    assert str(e) == "unknown rule 'warm' at position 0; available: none"


def test_label_set_names_may_be_any_name_the_registry_allows():
    assert parse("my-faces.smiling and 2nd.x") == And(
        (Term("smiling", "my-faces", False, 0), Term("x", "2nd", False, 21))
    )


def test_every_character_the_parser_takes_is_in_the_documented_alphabet():
    """The OpenAPI document gives q's alphabet (service.api.QUERY_PATTERN); a request the parser accepts must match it,
    or a schema-checking client sees a schema-violating request accepted."""
    import re

    from service.api import QUERY_PATTERN

    for code in [*range(0x250), 0x2003, 0x3000, 0xFEFF]:
        text = f"a {chr(code)}"
        try:
            parse(text)
        except SpecError as e:
            if str(e).startswith("invalid character"):
                continue
        assert re.fullmatch(QUERY_PATTERN["pattern"], text), repr(chr(code))


def test_a_requests_attrs_are_split_once(monkeypatch):
    """The shorthand ``attrs=`` (an AND of terms) is split once per request: picking the label set and building its
    spec used to split it each (split_spec, then again inside parse_spec)."""
    from types import SimpleNamespace

    from conditioning import specs
    from service import request_meaning as api

    calls = []
    monkeypatch.setattr(specs, "split_spec", lambda text, real=specs.split_spec: calls.append(text) or real(text))
    monkeypatch.setattr(api, "split_spec", specs.split_spec)
    faces = SimpleNamespace(name="faces", attr_names=CATALOG["faces"])
    st = SimpleNamespace(live=SimpleNamespace(sets={"faces": faces}))
    asked = api.Attrs("smiling,-eyeglasses")
    ls = api.pick_labelset(st, None, asked)
    assert api.spec_for(ls, asked) == {"Smiling": 1, "Eyeglasses": 0}
    assert calls == ["smiling,-eyeglasses"]


@pytest.mark.parametrize("unknown, celeba", [("young", True), ("zzz", False)])
def test_an_unknown_celeba_attribute_says_where_a_celeba_bundle_comes_from(unknown, celeba):
    """Both grammars: the q= query and the attrs= spec. Only a CelebA name gets the pointer to the CelebA recipe."""
    from conditioning.specs import parse_spec

    for e in (error(resolve, parse(f"smiling and {unknown}"), CATALOG), error(parse_spec, unknown, CATALOG["faces"])):
        assert e.code == "unknown_attributes" and e.details["unknown"] == [unknown]
        assert ("Young is a CelebA attribute" in str(e) and "training/recipes/celeba.sh" in str(e)) is celeba
        assert ("CelebA" in str(e)) is celeba
