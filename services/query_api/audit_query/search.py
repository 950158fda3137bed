"""The audit search language: `action:approve user:alice -outcome:succeeded "free text" after:2026-01-01`.

Grammar (LALR, lark): a query is a sequence of terms separated by blanks; a term is an optional `-` (negation)
then either `field:value` or free text; a value or free text is a bare word or a double-quoted string with `\\"`
and `\\\\` escapes. Repeated positive terms of one field are alternatives (OR); everything else (free-text words,
negations, different fields) is combined with AND. `entity:` and `user:` values ending in `*` are prefixes.
Errors name the 1-based character position they were found at.
"""

from datetime import UTC, date, datetime, time
from typing import Final

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from pydantic import BaseModel, ConfigDict

from audit_query.errors import BadRequestError
from audit_schemas import Action, ActorType, OutcomeStatus

MAX_QUERY_CHARS: Final = 1000
MAX_TERMS: Final = 50
MAX_VALUE_CHARS: Final = 256

_GRAMMAR: Final = r"""
    query: term*
    term: NEG? (field | text)
    field: FIELD (VALUE | STRING)
    text: WORD | STRING

    NEG: "-"
    FIELD.3: /[A-Za-z_]+:/
    STRING.2: /"(?:[^"\\]|\\.)*"/
    VALUE: /[^\s"]+/
    WORD: /[^\s"\-][^\s"]*/

    %import common.WS
    %ignore WS
"""

_PARSER: Final = Lark(_GRAMMAR, start="query", parser="lalr", lexer="contextual", propagate_positions=True)

OUTCOMES: Final = (*(s.value for s in OutcomeStatus), "in_progress")
"""What `outcome:` accepts: the recorded statuses, and `in_progress` for an action without an outcome yet."""

PREFIX_FIELDS: Final = ("entity", "user")

FIELDS: Final[dict[str, str]] = {
    "action": "action",
    "event": "action",
    "user": "user",
    "actor": "actor",
    "model": "model",
    "entity": "entity",
    "outcome": "outcome",
    "tenant": "tenant",
    "correlation": "correlation",
    "source": "source",
    "id": "id",
    "after": "after",
    "before": "before",
}
"""Field names (and aliases) of the language, to the term they make."""


class SearchTerm(BaseModel):
    """One field's condition: any of `values` (or, negated, none of them); `text` is free text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    values: tuple[str, ...]
    negated: bool = False


class SearchError(BadRequestError):
    """A query the language does not accept; the message names the position."""


def parse(query: str) -> tuple[SearchTerm, ...]:
    """The terms of `query`, grouped and validated; SearchError (400) naming the position otherwise."""
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query:
        raise SearchError(f"NUL character at position {query.index(chr(0)) + 1}")
    try:
        tree = _PARSER.parse(query)
    except UnexpectedInput as e:
        raise SearchError(_describe(e, query)) from e
    positives: dict[str, list[str]] = {}
    negatives: list[SearchTerm] = []
    terms = [t for t in tree.children if isinstance(t, Tree)]
    if len(terms) > MAX_TERMS:
        raise SearchError(f"more than {MAX_TERMS} terms")
    for term in terms:
        field, value, negated = _term(term)
        if negated or field == "text":  # free-text words must all match; negations each exclude
            negatives.append(SearchTerm(field=field, values=(value,), negated=negated))
        elif value not in positives.setdefault(field, []):
            positives[field].append(value)
    bounds = [f for f in ("after", "before") if len(positives.get(f, ())) > 1]
    if bounds:
        raise SearchError(f"`{bounds[0]}:` may appear once")
    return (*(SearchTerm(field=f, values=tuple(v)) for f, v in positives.items()), *negatives)


def _position(token: Token) -> int:
    """1-based character position of a token."""
    return (token.start_pos or 0) + 1


def _term(term: Tree[Token]) -> tuple[str, str, bool]:
    first = term.children[0]
    negated = isinstance(first, Token) and first.type == "NEG"
    node = term.children[-1]
    assert isinstance(node, Tree)
    tokens = [t for t in node.children if isinstance(t, Token)]
    if node.data == "text":
        return "text", _value(tokens[0]), negated
    name_token, value_token = tokens
    raw = name_token.value[:-1].lower()
    field = FIELDS.get(raw)
    if field is None:
        known = ", ".join(sorted(FIELDS))
        raise SearchError(
            f"unknown field `{raw}:` at position {_position(name_token)} (fields: {known}; "
            'quote free text that contains ":")'
        )
    if negated and field in ("after", "before"):
        raise SearchError(f"`{raw}:` cannot be negated (position {_position(name_token)})")
    return field, _checked(field, _value(value_token), _position(value_token)), negated


def _value(token: Token) -> str:
    text = str(token.value)
    if token.type == "STRING":
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not text:
        raise SearchError(f"empty value at position {_position(token)}")
    if len(text) > MAX_VALUE_CHARS:
        raise SearchError(f"value longer than {MAX_VALUE_CHARS} characters at position {_position(token)}")
    return text


def _checked(field: str, value: str, position: int) -> str:
    """The value in its canonical form, or SearchError naming what the field accepts."""
    if field == "action":
        return _one_of(value, [a.value for a in Action], "action", position)
    if field == "actor":
        return _one_of(value, [a.value for a in ActorType], "actor", position)
    if field == "outcome":
        return _one_of(value, list(OUTCOMES), "outcome", position)
    if field == "id":
        return _uuid(value, position)
    if value.endswith("*") and (field not in PREFIX_FIELDS or len(value) == 1 or "*" in value[:-1]):
        raise SearchError(f"`{value}` at position {position}: only entity: and user: take a prefix (abc*)")
    if field in ("after", "before"):
        return _instant(value, position).isoformat()
    return value


def _one_of(value: str, allowed: list[str], field: str, position: int) -> str:
    if value.lower() not in allowed:
        raise SearchError(f"`{field}:{value}` at position {position}: {field} is one of {', '.join(allowed)}")
    return value.lower()


def _uuid(value: str, position: int) -> str:
    from uuid import UUID

    try:
        return str(UUID(value))
    except ValueError as e:
        raise SearchError(f"`id:{value}` at position {position} is not an audit id (a UUID)") from e


def _instant(value: str, position: int) -> datetime:
    """A date (midnight UTC) or a date-time with an offset."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise SearchError(f"`{value}` at position {position} is not a date (2026-01-31) or date-time") from e
    if parsed.tzinfo is None:
        raise SearchError(f"`{value}` at position {position} needs a UTC offset (e.g. Z or +02:00)")
    return parsed.astimezone(UTC)


def _describe(error: UnexpectedInput, query: str) -> str:
    if isinstance(error, UnexpectedEOF):
        return f"the query ends early at position {len(query) + 1}"
    if isinstance(error, UnexpectedCharacters):
        at = error.pos_in_stream or 0
        if query[at] == '"':
            return f'unterminated quote at position {at + 1}: close it with "'
        return f"unexpected {query[at]!r} at position {at + 1}"
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            return f"a value is missing at the end of the query (position {len(query) + 1})"
        return f"unexpected {token.value!r} at position {_position(token)}"
    return f"invalid query at position {(error.pos_in_stream or 0) + 1}"


__all__ = ["FIELDS", "OUTCOMES", "SearchError", "SearchTerm", "parse"]
