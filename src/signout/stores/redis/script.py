"""The merge script: one Lua script merges a revocation into its bucket, prunes, sets the TTL and
announces the change; and how a pipeline of writes names it (``EVALSHA``, or the text)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster
import redis.cluster

from ...layout import Write
from ..base import Value

MERGE_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local channel = ARGV[2]
-- Prune and set the TTL by the earlier of the writer's and the server's clocks:
-- a writer whose clock runs ahead must not shorten anyone's revocations.
local server_now = tonumber(redis.call('TIME')[1])
if server_now < now then now = server_now end
local function parse(v)
  local a, b = string.match(v, '^(%-?%d+):(%-?%d+)$')
  if a then return tonumber(a), tonumber(b) end
  local e = tonumber(v)
  return e, e
end
-- merged[f]: the value this write left in field f; names: the fields in order, once each.
local merged, names = {}, {}
local claimed = false
for i = 3, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', key, f)
  if string.sub(v, 1, 1) == '=' then
    -- A claim (layout.claim_value): the first value stays, and the caller learns it.
    if old then
      v = old
      claimed = old
    else
      v = string.sub(v, 2)
    end
  elseif old then
    local oa, ob = parse(old)
    local na, nb = parse(v)
    if oa and na then
      if string.find(v, ':', 1, true) then
        v = string.format('%d:%d', math.max(oa, na), math.max(ob, nb))
      else
        v = string.format('%d', math.max(ob, nb))
      end
    end
  end
  redis.call('HSET', key, f, v)
  if not merged[f] then names[#names + 1] = f end
  merged[f] = v
end
local all = redis.call('HGETALL', key)
local latest = 0
for i = 1, #all, 2 do
  local _, e = parse(all[i + 1])
  if not e or e <= now then
    redis.call('HDEL', key, all[i])
    merged[all[i]] = nil
  elseif e > latest then
    latest = e
  end
end
if latest > now then
  redis.call('EXPIRE', key, latest - now + 1)
end
-- Tell local mirrors (stores.mirror) what changed, so they need not read the
-- bucket back: byte 1, then netstrings ("<length>:<bytes>,"; a field name is
-- any bytes) of the key and of each field written and still held, followed by
-- the value Redis now holds for it (stores.mirror.follower reads this).
if channel ~= '' then
  -- Concatenation, not string.format: Lua 5.1's %s cuts a string at a NUL byte.
  local out = {'\\1', tostring(#key), ':', key, ','}
  for _, f in ipairs(names) do
    local v = merged[f]
    if v then
      out[#out + 1] = tostring(#f) .. ':' .. f .. ',' .. tostring(#v) .. ':' .. v .. ','
    end
  end
  redis.call('PUBLISH', channel, table.concat(out))
end
-- The key's new expiry, and what a claim found already there (nil when it set its field).
return {latest, claimed}
"""
#: What ``EVALSHA`` names the script by (Redis caches every script ``EVAL`` ran, by this digest).


MERGE_SHA = hashlib.sha1(MERGE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def changes_channel(prefix: str) -> str:
    """The pub/sub channel every write announces its bucket on."""
    return f"{prefix}:changes"


CLUSTER_PIPES = (redis.cluster.ClusterPipeline, aredis.cluster.ClusterPipeline)


def queue_merges(pipe: Any, writes: Sequence[Write], now: float, *, whole: bool) -> Any:
    """``pipe`` with one merge script call per write: by its SHA1, or (``whole``) with its text.

    ``EVALSHA`` sends 40 bytes where ``EVAL`` sends the script's 2 KB and has
    Redis hash them again on every logout. redis-py's own ``Script`` objects
    would ask ``SCRIPT EXISTS`` before every pipeline: a round trip more.
    redis-py's cluster pipelines refuse ``EVALSHA``: they get the text. The commands are
    queued by name: redis-py's sync cluster pipeline has an ``eval()`` of its own (8.x: for
    its transactions) that takes no script, and routes a queued ``EVAL`` by its key all the same.
    """
    for w in writes:
        if whole:
            pipe.execute_command("EVAL", MERGE_SCRIPT, 1, w.key, *merge_args(w, now))  # caches it for EVALSHA
        else:
            pipe.execute_command("EVALSHA", MERGE_SHA, 1, w.key, *merge_args(w, now))
    return pipe


def merge_args(write: Write, now: float) -> list[bytes | int | str]:
    # Every bucket key starts with "<prefix>:{", so the channel follows from it.
    args: list[bytes | int | str] = [int(now), changes_channel(write.key.partition(":{")[0])]
    for name, value in write.fields:
        args += [name, value]
    return args


def placed(replies: list[Any], pending: Sequence[int], results: Sequence[Any]) -> list[Any]:
    """``replies`` with the results of the writes sent whole (``pending``) in their places."""
    for i, result in zip(pending, results, strict=True):
        replies[i] = result
    return replies


def claimed(replies: list[Any]) -> Value:
    reply = replies[0]
    # The script answers {expiry, what the claim found}; Lua's false arrives as None.
    return reply[1] if isinstance(reply, list) and len(reply) == 2 else None
