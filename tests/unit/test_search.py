"""The search language: what it accepts, how terms combine, and errors that name their position."""

import pytest

from audit_query.search import MAX_QUERY_CHARS, MAX_TERMS, SearchError, SearchTerm, parse


def test_the_auditors_example_parses_into_one_term_per_field() -> None:
    terms = parse(
        "action:approve user:alice model:resource entity:abc-123 outcome:failed tenant:acme "
        "after:2026-01-01 before:2026-02-01"
    )
    assert terms == (
        SearchTerm(field="action", values=("approve",)),
        SearchTerm(field="user", values=("alice",)),
        SearchTerm(field="model", values=("resource",)),
        SearchTerm(field="entity", values=("abc-123",)),
        SearchTerm(field="outcome", values=("failed",)),
        SearchTerm(field="tenant", values=("acme",)),
        SearchTerm(field="after", values=("2026-01-01T00:00:00+00:00",)),
        SearchTerm(field="before", values=("2026-02-01T00:00:00+00:00",)),
    )


def test_repeats_are_alternatives_negations_and_free_text_each_apply() -> None:
    terms = parse('user:a user:b user:a -user:c "alice smith" invoice -draft event:DELETE')
    assert terms == (
        SearchTerm(field="user", values=("a", "b")),
        SearchTerm(field="action", values=("delete",)),
        SearchTerm(field="user", values=("c",), negated=True),
        SearchTerm(field="text", values=("alice smith",)),
        SearchTerm(field="text", values=("invoice",)),
        SearchTerm(field="text", values=("draft",), negated=True),
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('user:"a \\"quoted\\" name"', ("user", 'a "quoted" name')),
        ('"back\\\\slash"', ("text", "back\\slash")),
        ("after:2026-01-01T10:00:00+02:00", ("after", "2026-01-01T08:00:00+00:00")),
        ("before:2026-01-01T10:00:00Z", ("before", "2026-01-01T10:00:00+00:00")),
        ("id:0190A000-0000-7000-8000-000000000001", ("id", "0190a000-0000-7000-8000-000000000001")),
        ("entity:inv-*", ("entity", "inv-*")),
        ("outcome:IN_PROGRESS", ("outcome", "in_progress")),
        ("ENTITY:x", ("entity", "x")),
        ("correlation:req-1:2", ("correlation", "req-1:2")),
        ("naïve-wörd", ("text", "naïve-wörd")),
    ],
)
def test_values(query: str, expected: tuple[str, str]) -> None:
    (term,) = parse(query)
    assert (term.field, term.values[0]) == expected


def test_an_empty_or_blank_query_is_no_condition() -> None:
    assert parse("") == ()
    assert parse("   \t ") == ()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("action:bogus", "`action:bogus` at position 8: action is one of create,"),
        ("user:alice foo:bar", "unknown field `foo:` at position 12"),
        ("http://example.com", "unknown field `http:` at position 1"),
        ("user:", "a value is missing at the end of the query (position 6)"),
        ('user:alice "open', "unterminated quote at position 12"),
        ("after:2026-13-01", "`2026-13-01` at position 7 is not a date"),
        ("after:2026-01-01T10:00:00", "needs a UTC offset"),
        ("-after:2026-01-01", "`after:` cannot be negated (position 2)"),
        ("after:2026-01-01 after:2026-02-01", "`after:` may appear once"),
        ("outcome:maybe", "outcome is one of succeeded, failed, aborted, in_progress"),
        ("actor:robot", "actor is one of user, service_account, system"),
        ("id:not-a-uuid", "`id:not-a-uuid` at position 4 is not an audit id"),
        ('user:""', "empty value at position 6"),
        ("model:res*", "only entity: and user: take a prefix"),
        ("entity:*", "only entity: and user: take a prefix"),
        ("entity:a*b*", "only entity: and user: take a prefix"),
        ("user:a\x00b", "NUL character at position 7"),
    ],
)
def test_errors_name_what_and_where(query: str, message: str) -> None:
    with pytest.raises(SearchError) as caught:
        parse(query)
    assert message in str(caught.value)
    assert caught.value.status_code == 400


def test_bounded_length_terms_and_values() -> None:
    with pytest.raises(SearchError, match=f"longer than {MAX_QUERY_CHARS} characters"):
        parse("x" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(SearchError, match=f"more than {MAX_TERMS} terms"):
        parse(" ".join(f"w{i}" for i in range(MAX_TERMS + 1)))
    with pytest.raises(SearchError, match="value longer than 256 characters at position 6"):
        parse("user:" + "u" * 257)
