"""What a Redis store holds (``signout.stats``): live revocations by kind, bucket keys, memory, exact or
sampled; through ``signout stats`` and ``collect``, against the real redis-server."""

from __future__ import annotations

import json
import time

import pytest
import redis

import signout
from signout.stats import collect

from .conftest import ISS
from .helpers import cli, in_process

pytestmark = pytest.mark.redis


def test_stats_counts_live_entries(redis_url: str, redis_client: redis.Redis) -> None:
    now = int(time.time())
    revoker = signout.Revoker(redis_url=redis_url)
    revoker.revoke_user_sync(sub="alice", iss=ISS)
    revoker.revoke_session_sync(sid="s-2", iss=ISS, sub="bob")
    revoker.revoke_sync({"iss": ISS, "sub": "carol", "jti": "j-1", "exp": now + 600})
    revoker.revoke_sync({"iss": ISS, "jti": "lonely", "exp": now + 600})
    user_key = next(k for k in redis_client.scan_iter() if any(f[:1] == b"u" for f in redis_client.hkeys(k)))
    redis_client.hset(user_key, "jstale", "5")  # expired, not yet pruned
    shaped = (f"signout:{{{n:04x}}}" for n in range(0xFFFF, 0, -1))
    foreign = next(k for k in shaped if not redis_client.exists(k))
    redis_client.set(foreign, "not a bucket")  # shaped like a bucket, but not a hash
    redis_client.hset("other:{0000}", "u", f"1:{now + 600}")

    done = cli("stats", "--json", url=redis_url)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert {k: stats[k] for k in ("users", "sessions", "tokens", "keys", "expired", "memory_estimated")} == {
        "users": 1,
        "sessions": 1,
        "tokens": 2,
        "keys": 4,
        "expired": 1,
        "memory_estimated": False,
    }
    assert stats["memory_bytes"] > 0
    assert stats["memory_sampled"] == 4


def test_stats_text_and_estimate(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    revoker = signout.Revoker(redis_url=redis_url)
    for n in range(12):
        revoker.revoke_user_sync(sub=f"user-{n}", iss=ISS)
    exact = collect(redis_client, "signout", time.time())
    sampled = collect(redis_client, "signout", time.time(), sample=5)
    assert (exact.keys, exact.users, exact.memory_estimated, exact.memory_sampled) == (12, 12, False, 12)
    assert (sampled.keys, sampled.users, sampled.memory_estimated, sampled.memory_sampled) == (12, 12, True, 5)
    assert abs(sampled.memory_bytes - exact.memory_bytes) <= exact.memory_bytes // 4

    monkeypatch.setenv("REDIS_URL", redis_url)
    code, out, _ = in_process(monkeypatch, capsys, "stats")
    assert code == 0
    assert "users logged out everywhere  12\n" in out
    assert "bucket keys                  12\n" in out
