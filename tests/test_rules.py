"""The revocation rule (``signout.rules``, SPEC section 3): a table of what the store holds, and
whether it revokes a token."""

from __future__ import annotations

import pytest

from signout import layout
from signout.rules import revoked
from signout.tokens import Source, Token

from .conftest import ISS, NOW


def t(iat: float | None = NOW, sub: str | None = "alice", sid: str | None = "s", jti: str | None = "j") -> Token:
    return Token(Source.HEADER, {}, ISS, sub, sid, jti, iat, NOW + 600)


FAR = int(NOW) + 10_000


# The fields of t()'s ids (sub "alice", sid "s", jti "j", all of ISS).
U, S, J = layout.user_field(ISS, "alice"), layout.session_field(ISS, "s"), layout.token_field(ISS, "j")


REVOKED: list[tuple[str, Token, dict[bytes, bytes], bool]] = [
    ("nothing stored", t(), {}, False),
    ("jti denylisted", t(), {J: layout.expiry_value(FAR)}, True),
    ("jti entry expired", t(), {J: layout.expiry_value(int(NOW) - 1)}, False),
    ("other jti", t(jti="k"), {J: layout.expiry_value(FAR)}, False),
    ("sid logged out", t(), {S: layout.expiry_value(FAR)}, True),
    ("user cutoff after iat", t(iat=NOW - 5), {U: layout.cutoff_value(int(NOW), FAR)}, True),
    ("user cutoff equal to iat", t(iat=NOW), {U: layout.cutoff_value(int(NOW), FAR)}, True),
    ("user cutoff before iat", t(iat=NOW + 1), {U: layout.cutoff_value(int(NOW), FAR)}, False),
    ("no iat, any cutoff", t(iat=None), {U: layout.cutoff_value(0, FAR)}, True),
    ("cutoff record expired", t(iat=NOW - 5), {U: layout.cutoff_value(int(NOW), int(NOW) - 1)}, False),
    ("no sub: cutoff ignored", t(sub=None), {U: layout.cutoff_value(int(NOW), FAR)}, False),
    ("garbage value", t(), {J: b"not-a-number"}, False),
]


@pytest.mark.parametrize(("name", "tok", "values", "expected"), REVOKED, ids=[r[0] for r in REVOKED])
def test_revoked_table(name: str, tok: Token, values: dict[bytes, bytes], expected: bool) -> None:
    assert revoked(tok, values, NOW) is expected
