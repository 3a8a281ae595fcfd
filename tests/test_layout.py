"""Where revocations live (``signout.layout``): key names, field names and field values.

Ids are data, never key syntax; distinct ids never share a field; a token is judged from the one
bucket its owner picks; stored values merge by the script's rule.
"""

from __future__ import annotations

import re

import pytest

from signout import layout

from .conftest import ISS

NASTY = ["*", "{", "}", "{alice}", "a}b{c", "\r\n", "\x00", "x" * 5000, "x" * 65536, "é", "\ud800", ""]


KEY = re.compile(r"^signout:\{[0-9a-f]{4}\}$")


@pytest.mark.parametrize("value", NASTY, ids=[repr(v)[:20] for v in NASTY])
def test_every_id_yields_a_well_formed_key_with_one_tag(value: str) -> None:
    for key in (
        layout.bucket_key("signout", value, value, None, None),
        layout.bucket_key("signout", ISS, None, value, None),
        layout.bucket_key("signout", ISS, None, None, value),
    ):
        assert key is not None and KEY.match(key)
    for field in (layout.user_field(value, value), layout.session_field(ISS, value), layout.token_field(ISS, value)):
        assert len(field) == 1 + layout.FIELD_DIGEST


def test_distinct_ids_never_share_a_field() -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a\x00", "b"), ("a", "\x00b"), (ISS, "x" * 100), (ISS, "x" * 99 + "y")]
    for make in (layout.user_field, layout.session_field, layout.token_field):
        assert len({make(iss, value) for iss, value in pairs}) == len(pairs)
    # One id as a user, a session and a token: three kinds, three fields.
    assert len({layout.user_field(ISS, "x"), layout.session_field(ISS, "x"), layout.token_field(ISS, "x")}) == 3
    # The same jti from two issuers is two tokens.
    assert layout.token_field("https://a", "j") != layout.token_field("https://b", "j")


def test_a_token_is_judged_from_one_bucket_its_owner_picks() -> None:
    # Owner: the user if there is a sub, else the session, else the token itself.
    assert layout.bucket_key("p", ISS, "alice", "s1", "j1") == layout.bucket_key("p", ISS, "alice", None, None)
    assert layout.bucket_key("p", ISS, None, "s1", "j1") == layout.bucket_key("p", ISS, None, "s1", None)
    assert layout.bucket_key("p", ISS, None, None, "j1") is not None
    assert layout.bucket_key("p", ISS, None, None, None) is None


def test_buckets_are_shared_and_spread_evenly() -> None:
    # 65,536 shards: 200,000 users land in about 3 per bucket, none far above.
    keys = [layout.bucket_key("p", ISS, f"user-{i}", None, None) for i in range(200_000)]
    counts: dict[str | None, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) > 0.9 * layout.SHARDS
    assert max(counts.values()) < 20


MERGES = [
    (None, b"10", b"10"),
    (b"20", b"10", b"20"),
    (b"10", b"20", b"20"),
    (b"5:20", b"7:10", b"7:20"),
    (b"junk", b"10", b"10"),
]


@pytest.mark.parametrize(("old", "new", "merged"), MERGES)
def test_merge_keeps_the_later_cutoff_and_expiry(old: bytes | None, new: bytes, merged: bytes) -> None:
    assert layout.merge(old, new) == merged


def test_a_claim_merged_beside_other_writes_keeps_their_rules() -> None:
    assert layout.merge(None, b"=5:9") == b"5:9"
    assert layout.merge(b"1:9", b"=5:20") == b"1:9"
    assert layout.merge(b"7", b"9") == b"9"
