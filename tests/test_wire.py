"""The lean RESP2 reader (``stores.wire``), against real redis-servers: parsing, auth, db, sockets, failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from signout import RedisStore, SignOutMiddleware, SignOutWSGIMiddleware
from signout.errors import ConfigError, StoreError
from signout.layout import Lookup
from signout.stores.base import Value
from signout.stores.wire.blocking import SyncReader
from signout.stores.wire.pipelined import AsyncReader
from signout.stores.wire.resp import INCOMPLETE, Address, ErrorReply, ProtocolError, Replies, Row, encode

from .apps import RawApp, wsgi_app
from .conftest import SECRET, RedisServer, TokenFactory, free_port, missing_redis, spawn_redis, wait_for_redis

T = TypeVar("T")
Rows = list[list[Value]]
PASSWORD = "s3cret-pass-word-xyz"


async def bounded(call: Awaitable[T], seconds: float = 2.0) -> T:
    """What the ASGI adapter does around every store call."""
    return await asyncio.wait_for(call, seconds)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


def connections(client: redis.Redis) -> int:
    """Connections received so far, from INFO (``client`` itself adds one the first time)."""
    return int(client.info("stats")["total_connections_received"])


@contextlib.contextmanager
def private_redis(*args: str, ping: Callable[[], Any] | None = None, port: int | None = None) -> Iterator[int]:
    """A redis-server of this test's own (for what the shared one must not suffer: passwords, SIGSTOP)."""
    port = port or free_port()
    try:
        process = spawn_redis(["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *args])
    except FileNotFoundError:
        missing_redis("redis-server is not installed")  # a failure under CI=true, never a quiet skip
        raise
    check = ping or redis.Redis(port=port, password=PASSWORD if "--requirepass" in args else None).ping
    try:
        wait_for_redis(port, process, check)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a stopped server cannot terminate
        process.terminate()
        process.wait(10)


def pid_of(port: int) -> int:
    with redis.Redis(port=port) as client:
        return int(client.info("server")["process_id"])


# ---- parsing ---------------------------------------------------------------------------------


def test_the_parser_waits_for_every_split_of_a_reply() -> None:
    replies = [b"*3\r\n$3\r\nabc\r\n$-1\r\n$4\r\na\r\nb\r\n", b"+OK\r\n", b"-WRONGTYPE no\r\n", b":42\r\n", b"*-1\r\n"]
    stream = b"".join(replies)
    for cut in range(len(stream) + 1):
        parsed = Replies()
        parsed.feed(stream[:cut])
        got = []
        while (item := parsed.next()) is not INCOMPLETE:
            got.append(item)
        parsed.feed(stream[cut:])  # the rest, later
        while (item := parsed.next()) is not INCOMPLETE:
            got.append(item)
        assert got[0] == [b"abc", None, b"a\r\nb"]
        assert got[1] == b"OK"
        assert isinstance(got[2], ErrorReply) and got[2].kind == "WRONGTYPE"
        assert got[3:] == [42, None]
        assert not parsed.pending()


def test_bytes_that_are_not_resp_are_a_protocol_error() -> None:
    parsed = Replies()
    parsed.feed(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(ProtocolError):
        parsed.next()


def test_address_comes_from_redis_pys_parser_and_hides_the_password() -> None:
    address = Address.from_url(f"redis://alice:{PASSWORD}@db.example:6380/4")
    assert (address.host, address.port, address.db, address.username) == ("db.example", 6380, 4, "alice")
    assert PASSWORD not in repr(address)
    assert Address.from_url("unix:///run/redis.sock?db=2").path == "/run/redis.sock"
    with pytest.raises(ConfigError) as raised:
        RedisStore(f"redis://u:{PASSWORD}@h:notaport/0")
    assert PASSWORD not in str(raised.value)


# ---- replies ---------------------------------------------------------------------------------


def test_present_absent_and_binary_fields(redis_url: str, redis_client: redis.Redis) -> None:
    odd_field, odd_value = b"f\r\n\x00{x}*", b"v\r\n$3\r\n\x00\xff-ERR"
    redis_client.hset("k", mapping={b"a": b"1", odd_field: odd_value, b"empty": b""})
    fields = [b"a", b"missing", odd_field, b"empty"]
    want = [b"1", None, odd_value, b""]
    address = Address.from_url(redis_url)

    async def main() -> tuple[list[bytes | None], list[bytes | None]]:
        reader = AsyncReader(address, timeout=1)
        try:
            return await bounded(reader.hmget("k", fields)), await bounded(reader.hmget("nokey", [b"a"]))
        finally:
            await reader.aclose()

    assert run(main) == (want, [None])
    sync = SyncReader(address, timeout=1)
    assert sync.hmget("k", fields) == want
    assert sync.hmget("nokey", [b"a", b"b"]) == [None, None]
    sync.close()


def test_a_large_value_split_over_many_reads(redis_url: str, redis_client: redis.Redis) -> None:
    big = os.urandom(200_000).replace(b"\r", b"\r\n")  # CRLFs inside must not end it early
    redis_client.hset("big", mapping={b"v": big, b"w": b"after"})
    address = Address.from_url(redis_url)

    async def main() -> list[list[bytes | None]]:
        reader = AsyncReader(address, timeout=1)
        try:
            return await bounded(reader.hmget_many([("big", [b"v", b"w"]), ("big", [b"w"])]))
        finally:
            await reader.aclose()

    assert run(main) == [[big, b"after"], [b"after"]]
    sync = SyncReader(address, timeout=1)
    assert sync.hmget_many([("big", [b"v"]), ("big", [b"w"])]) == [[big], [b"after"]]
    sync.close()


def test_an_error_reply_fails_only_its_command(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.set("plain", "x")
    redis_client.hset("h", "f", "v")
    address = Address.from_url(redis_url)

    async def main() -> list[object]:
        reader = AsyncReader(address, timeout=1)
        try:
            calls = [reader.hmget("h", [b"f"]), reader.hmget("plain", [b"f"]), reader.hmget("h", [b"f"])]
            out: list[object] = list(await asyncio.gather(*calls, return_exceptions=True))
            out.append(await reader.hmget("h", [b"f"]))  # the same connection goes on
            return out
        finally:
            await reader.aclose()

    first, failed, third, after = run(main)
    assert (first, third, after) == ([b"v"], [b"v"], [b"v"])
    assert isinstance(failed, StoreError) and "WRONGTYPE" in str(failed)
    sync = SyncReader(address, timeout=1)
    with pytest.raises(StoreError, match="WRONGTYPE"):
        sync.hmget_many([("h", [b"f"]), ("plain", [b"f"])])
    assert sync.hmget("h", [b"f"]) == [b"v"]
    sync.close()


# ---- where and as whom -----------------------------------------------------------------------


async def read_once(url: str) -> Row:
    reader = AsyncReader(Address.from_url(url), timeout=1)
    try:
        return await bounded(reader.hmget("k", [b"f"]))
    finally:
        await reader.aclose()


def test_password_and_acl_user() -> None:
    with private_redis("--requirepass", PASSWORD) as port:
        admin = redis.Redis(port=port, password=PASSWORD)
        admin.hset("k", "f", "v")
        admin.acl_setuser("reader", enabled=True, passwords=["+reader-pw-123"], keys=["*"], commands=["+hmget"])
        good = [f"redis://:{PASSWORD}@127.0.0.1:{port}/0", f"redis://reader:reader-pw-123@127.0.0.1:{port}/0"]
        bad = {
            f"redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0": "WRONGPASS",
            f"redis://reader:{PASSWORD}@127.0.0.1:{port}/0": "WRONGPASS",
            f"redis://127.0.0.1:{port}/0": "NOAUTH",
        }
        for url in good:
            assert SyncReader(Address.from_url(url), timeout=1).hmget("k", [b"f"]) == [b"v"]
            assert asyncio.run(read_once(url)) == [b"v"]
        for url, kind in bad.items():
            with pytest.raises(StoreError) as sync_error:
                SyncReader(Address.from_url(url), timeout=1).hmget("k", [b"f"])
            with pytest.raises(StoreError) as async_error:
                asyncio.run(read_once(url))
            for raised in (sync_error, async_error):
                assert kind in str(raised.value)
                assert PASSWORD not in str(raised.value) and "reader-pw" not in str(raised.value)
        # Through the store, sync and async, the error names it (never its password).
        for url, kind in bad.items():
            store = RedisStore(url, timeout=1)
            with pytest.raises(StoreError) as sync_error:
                store.fetch_sync([Lookup("k", (b"f",))], 0)
            with pytest.raises(StoreError) as async_error:
                asyncio.run(store.fetch([Lookup("k", (b"f",)), Lookup("k", (b"f",))], 0))
            for raised in (sync_error, async_error):
                assert kind in str(raised.value) and raised.value.where == store.where, url
            store.close()
        admin.close()


def test_the_url_selects_the_db(redis_server: RedisServer, redis_url: str) -> None:
    in_three = redis.Redis(port=redis_server.port, db=3)
    in_three.hset("k", "f", "three")
    base = f"redis://127.0.0.1:{redis_server.port}"

    async def main(url: str) -> list[bytes | None]:
        store = RedisStore(url)
        try:
            return (await bounded(store.fetch([Lookup("k", (b"f",))], 0)))[0]  # type: ignore[return-value]
        finally:
            await store.aclose()

    assert run(lambda: main(f"{base}/3")) == [b"three"]
    assert run(lambda: main(f"{base}/0")) == [None]
    assert RedisStore(f"{base}/3").fetch_sync([Lookup("k", (b"f",))], 0) == [[b"three"]]
    assert RedisStore(f"{base}/0").fetch_sync([Lookup("k", (b"f",))], 0) == [[None]]
    in_three.flushdb()
    in_three.close()


def test_a_unix_socket_url(tmp_path: Path) -> None:
    path = str(tmp_path / "redis.sock")
    with private_redis("--unixsocket", path, ping=lambda: redis.Redis(unix_socket_path=path).ping()):
        admin = redis.Redis(unix_socket_path=path, db=1)
        admin.hset("k", "f", "over unix")
        url = f"unix://{path}?db=1"
        store = RedisStore(url)
        assert store.fetch_sync([Lookup("k", (b"f",))], 0) == [[b"over unix"]]

        async def main() -> Rows:
            try:
                return await bounded(store.fetch([Lookup("k", (b"f",))], 0))
            finally:
                await store.aclose()

        assert run(main) == [[b"over unix"]]
        store.close()
        admin.close()


# ---- pipelining, coalescing, cancellation -----------------------------------------------------


def fill(client: redis.Redis, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"user:{i}", mapping={b"a": f"a-{i}", b"b": f"b-{i}"})
    pipe.execute()


def test_many_concurrent_reads_each_get_their_own_row(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 200)
    # What is checked is which row each read gets, not how fast: the default 0.25 s per read timed
    # out twice in full CI runs (200 reads at once on 2 vCPUs, a collector pause), as a 503 would.
    store = RedisStore(redis_url, timeout=2)

    async def one(i: int) -> Rows:
        # Some with two lookups (a token with two issuers' buckets), some with the fields swapped.
        if i % 3 == 0:
            lookups = [Lookup(f"user:{i}", (b"a", b"b")), Lookup(f"user:{(i + 1) % 200}", (b"b",))]
            return await store.fetch(lookups, 0)
        return await store.fetch([Lookup(f"user:{i}", (b"b", b"nope", b"a"))], 0)

    async def main() -> list[Rows]:
        try:
            return await bounded(asyncio.gather(*(one(i) for i in range(200))))
        finally:
            await store.aclose()

    for i, rows in enumerate(run(main)):
        if i % 3 == 0:
            assert rows == [[f"a-{i}".encode(), f"b-{i}".encode()], [f"b-{(i + 1) % 200}".encode()]]
        else:
            assert rows == [[f"b-{i}".encode(), None, f"a-{i}".encode()]]


def count_writes(reader: AsyncReader, writes: list[int]) -> None:
    """Record, for each write on the reader's connection, how many commands it carried."""
    transport: Any = reader._conn._transport  # type: ignore[union-attr]
    write = transport.write

    def counted(data: bytes) -> None:
        writes.append(data.count(b"HMGET"))
        write(data)

    transport.write = counted


def test_reads_started_in_one_tick_share_a_write(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 50)
    reader = AsyncReader(Address.from_url(redis_url), timeout=1)
    writes: list[int] = []

    async def main() -> list[list[bytes | None]]:
        await reader.hmget("user:0", [b"a"])  # connected
        count_writes(reader, writes)
        before = int(redis_client.info("stats")["total_reads_processed"])
        rows = await bounded(asyncio.gather(*(reader.hmget(f"user:{i}", [b"a"]) for i in range(50))))
        reads = int(redis_client.info("stats")["total_reads_processed"]) - before
        assert reads <= 3 + 1  # 50 commands, a couple of reads (and the INFO)
        await reader.aclose()
        return rows

    assert run(main) == [[f"a-{i}".encode()] for i in range(50)]
    # The first goes out at once (nothing was in flight), the rest in one write a tick later.
    assert writes == [1, 49]


def test_without_coalescing_each_read_is_written_at_once(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 8)
    reader = AsyncReader(Address.from_url(redis_url), timeout=1, coalesce=False)
    writes: list[int] = []

    async def main() -> list[Row]:
        await reader.hmget("user:0", [b"a"])
        count_writes(reader, writes)
        rows = await bounded(asyncio.gather(*(reader.hmget(f"user:{i}", [b"a"]) for i in range(8))))
        await reader.aclose()
        return rows

    assert run(main) == [[f"a-{i}".encode()] for i in range(8)]
    assert writes == [1] * 8


@pytest.mark.parametrize("lookups", [1, 2], ids=["one lookup", "two lookups"])
def test_a_cancelled_read_never_hands_its_reply_to_another(
    redis_url: str, redis_client: redis.Redis, lookups: int
) -> None:
    fill(redis_client, 60)
    reader = AsyncReader(Address.from_url(redis_url), timeout=1)

    async def read(i: int) -> object:
        rows = await reader.hmget_many([(f"user:{i}", [b"a", b"b"])] * lookups)
        assert rows[1:] == rows[:-1]  # each command its own reply, in order
        return rows[0]

    async def main() -> list[object]:
        await reader.hmget("user:0", [b"a"])
        redis_client.client_pause(150, all=True)  # every reply below is in flight while we cancel
        tasks = [asyncio.ensure_future(read(i)) for i in range(60)]
        await asyncio.sleep(0.02)
        for task in tasks[10:60:7]:
            task.cancel()
        out: list[object] = list(await bounded(asyncio.gather(*tasks, return_exceptions=True)))
        out.append(await bounded(reader.hmget("user:59", [b"b"])))  # and the reader is still good
        await reader.aclose()
        return out

    out = run(main)
    for i, got in enumerate(out[:60]):
        if i in range(10, 60, 7):
            assert isinstance(got, asyncio.CancelledError)
        else:
            assert got == [f"a-{i}".encode(), f"b-{i}".encode()], i
    assert out[60] == [b"b-59"]


def test_concurrent_first_reads_open_one_connection(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 20)
    store = RedisStore(redis_url)

    async def main() -> None:
        before = connections(redis_client)
        await bounded(asyncio.gather(*(store.fetch([Lookup(f"user:{i}", (b"a",))], 0) for i in range(20))))
        assert connections(redis_client) - before == 1
        await store.aclose()

    run(main)


def test_each_event_loop_gets_its_own_connection(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 1)
    store = RedisStore(redis_url)
    lookup = [Lookup("user:0", (b"a",))]
    readers: list[object] = []
    addresses: list[str] = []

    async def main() -> Rows:
        rows = await bounded(store.fetch(lookup, 0))
        reader: Any = store._per_loop[asyncio.get_running_loop()].reader
        readers.append(reader)
        host, port = reader._conn._transport.get_extra_info("sockname")[:2]
        addresses.append(f"{host}:{port}")
        return rows  # no aclose: a loop that ends without it (TestClient without "with")

    before = connections(redis_client)
    assert run(main) == run(main) == [[b"a-0"]]
    assert connections(redis_client) - before == 2
    assert readers[0] is not readers[1]
    # The first loop's connection was let go of when the second loop found its loop closed.
    assert len(store._per_loop) == 1
    alive = {c["addr"] for c in redis_client.client_list()}
    assert addresses[0] not in alive and addresses[1] in alive


def test_a_read_after_aclose_opens_a_connection_the_next_aclose_closes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The store remembers the loop that read last: aclose must make it forget, or a later
    read would reopen a connection no aclose could find."""
    fill(redis_client, 1)
    store = RedisStore(redis_url)
    lookup = (Lookup("user:0", (b"a",)),)

    def open_ones() -> set[str]:
        return {c["addr"] for c in redis_client.client_list() if c["name"] != "probe"}

    async def main() -> None:
        redis_client.client_setname("probe")
        before = open_ones()
        for _ in range(3):
            assert await bounded(store.fetch(lookup, 0)) == [[b"a-0"]]
            assert len(open_ones() - before) == 1
            await store.aclose()
            for _ in range(100):  # the server notices a closed socket in its own time
                if not open_ones() - before:
                    break
                await asyncio.sleep(0.01)
            assert open_ones() - before == set()

    run(main)


# ---- failures and recovery -------------------------------------------------------------------


def test_nothing_listening_is_a_store_error() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, timeout=0.2)
    with pytest.raises(StoreError) as sync_error:
        store.fetch_sync([Lookup("k", (b"f",))], 0)
    with pytest.raises(StoreError) as async_error:
        run(lambda: bounded(store.fetch([Lookup("k", (b"f",))], 0)))
    for raised in (sync_error, async_error):
        assert PASSWORD not in str(raised.value)
    with pytest.raises(StoreError):
        RedisStore("redis://no-such-host.invalid:6379/0", timeout=0.5).fetch_sync([Lookup("k", (b"f",))], 0)


@pytest.mark.parametrize("lookups", [1, 2], ids=["one lookup", "two lookups"])  # one future, or the last of two
def test_a_paused_server_fails_within_the_timeout_then_recovers(lookups: int) -> None:
    lookup = [Lookup("k", (b"f",))] * lookups
    with private_redis() as port:
        redis.Redis(port=port).hset("k", "f", "v")
        pid = pid_of(port)
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)

        async def main() -> None:
            assert await bounded(store.fetch(lookup, 0)) == [[b"v"]] * lookups
            os.kill(pid, signal.SIGSTOP)
            try:
                for _ in range(3):  # each on a fresh connection: the timed-out one was dropped, not queued on
                    started = time.monotonic()
                    with pytest.raises(StoreError, match=r"no answer within store_timeout=0\.2 s"):
                        await store.fetch(lookup, 0)  # no deadline of ours: the reader keeps its own
                    assert 0.15 < time.monotonic() - started < 0.5
                    conn = store._per_loop[asyncio.get_running_loop()].reader._conn  # type: ignore[union-attr]
                    assert conn is not None and conn.closed  # dropped, so nothing piles up behind it
                # A caller that gives up first (cancellation) leaves the connection to the
                # watchdog: it is dropped once the oldest read in flight passes its deadline.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(store.fetch(lookup, 0), 0.05)
                conn = store._per_loop[asyncio.get_running_loop()].reader._conn  # type: ignore[union-attr]
                assert conn is not None and not conn.closed
                await asyncio.sleep(0.25)
                assert conn.closed
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await bounded(store.fetch(lookup, 0)) == [[b"v"]] * lookups
            await store.aclose()

        run(main)
        assert store.fetch_sync(lookup, 0) == [[b"v"]] * lookups
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="TimeoutError"):
                store.fetch_sync(lookup, 0)
            assert time.monotonic() - started < 0.5  # one timeout: a timeout is not retried
        finally:
            os.kill(pid, signal.SIGCONT)
        assert store.fetch_sync(lookup, 0) == [[b"v"]] * lookups
        store.close()


@pytest.mark.parametrize("lookups", [1, 2], ids=["one lookup", "two lookups"])
def test_a_restarted_server_costs_no_failed_read(lookups: int) -> None:
    lookup = [Lookup("k", (b"f",))] * lookups
    server = RedisServer().start()
    store = RedisStore(server.url, timeout=0.5)

    def restart() -> None:
        server.stop()
        server.start()
        redis.Redis(port=server.port).hset("k", "f", "again")

    async def main() -> Rows:
        assert await bounded(store.fetch(lookup, 0)) == [[None]] * lookups
        restart()  # blocking: the loop has not seen the old connection close
        rows = await bounded(store.fetch(lookup, 0))
        await store.aclose()
        return rows

    try:
        assert run(main) == [[b"again"]] * lookups
        assert store.fetch_sync(lookup, 0) == [[b"again"]] * lookups
        restart()
        assert store.fetch_sync(lookup, 0) == [[b"again"]] * lookups  # the stale socket is retried once
    finally:
        store.close()
        server.stop()


def test_the_guard_fails_closed_while_paused_and_recovers(make_token: TokenFactory) -> None:
    with private_redis() as port:
        pid = pid_of(port)
        middleware = SignOutMiddleware(RawApp(), key=SECRET, redis_url=f"redis://127.0.0.1:{port}/0", store_timeout=0.2)

        async def status() -> int:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: Any) -> None:
                sent.append(message)

            headers = [(b"authorization", f"Bearer {make_token()}".encode())]
            scope = {"type": "http", "method": "GET", "path": "/me", "query_string": b"", "headers": headers}
            await middleware(scope, receive, send)
            return int(sent[0]["status"])

        async def main() -> list[int]:
            seen = [await status()]
            os.kill(pid, signal.SIGSTOP)
            try:
                seen += await asyncio.gather(*(status() for _ in range(5)))
            finally:
                os.kill(pid, signal.SIGCONT)
            seen.append(await status())
            return seen

        assert run(main) == [200, 503, 503, 503, 503, 503, 200]


# ---- threads ---------------------------------------------------------------------------------


def test_a_client_cancelling_in_a_loop_costs_its_neighbours_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    # Cancelled reads (clients going away) must not drop the shared connection:
    # that would send every other read in flight to its one retry, and a second
    # cancellation within a round trip would fail them (503 for healthy users).
    fill(redis_client, 20)
    reader = AsyncReader(Address.from_url(redis_url), timeout=1)

    async def main() -> tuple[int, int]:
        await reader.hmget("user:0", [b"a"])
        conn = reader._conn
        stop = asyncio.Event()

        async def canceller() -> int:
            cancelled = 0
            while not stop.is_set():
                task = asyncio.ensure_future(reader.hmget("user:1", [b"a"]))
                await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                cancelled += 1
            return cancelled

        async def bystander(i: int) -> int:
            wrong = 0
            for _ in range(200):
                if await reader.hmget(f"user:{i}", [b"a"]) != [f"a-{i}".encode()]:
                    wrong += 1
            return wrong

        spoiler = asyncio.ensure_future(canceller())
        wrong = sum(await asyncio.gather(*(bystander(i) for i in range(2, 12))))
        stop.set()
        cancelled = await spoiler
        assert reader._conn is conn  # one connection throughout
        await reader.aclose()
        return wrong, cancelled

    wrong, cancelled = run(main)
    assert cancelled > 100 and wrong == 0


def test_event_loops_in_many_threads_share_one_store(redis_url: str, redis_client: redis.Redis) -> None:
    # SPEC section 5: some servers run a loop per thread. Their first reads race
    # to register their loops (and to prune closed ones) in the store.
    import sys

    redis_client.hset("k", "f", "v")
    store = RedisStore(redis_url)
    lookup = [Lookup("k", (b"f",))]
    for _ in range(10):  # closed loops left behind, as TestClient without `with` leaves them
        assert asyncio.run(store.fetch(lookup, 0)) == [[b"v"]]
    errors: list[str] = []

    def worker() -> None:
        async def once() -> None:
            try:
                assert await store.fetch(lookup, 0) == [[b"v"]]
            except Exception as exc:  # every failure is the finding
                errors.append(repr(exc))

        for _ in range(10):
            asyncio.run(once())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen any race
    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_an_interrupted_sync_read_never_hands_its_reply_to_the_next(redis_url: str, redis_client: redis.Redis) -> None:
    # A request timeout raised by a signal (or gevent.Timeout, KeyboardInterrupt)
    # mid-read leaves that reply on the socket: reused, the socket would answer the
    # next check with it, and a revoked token would read as "nothing stored".
    redis_client.hset("revoked-bucket", b"jB", b"9999999999")
    reader = SyncReader(Address.from_url(redis_url), timeout=1.0)
    assert reader.hmget("innocent-bucket", [b"jA"]) == [None]

    class Interrupt(BaseException):
        pass

    def interrupt(*_: object) -> None:
        raise Interrupt()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        redis_client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # type: ignore[no-untyped-call]
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupt):
            reader.hmget("innocent-bucket", [b"jA"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.35)  # the pause ends; the interrupted reply is now on that socket
    assert reader.hmget("revoked-bucket", [b"jB"]) == [b"9999999999"]
    assert reader.hmget("innocent-bucket", [b"jA"]) == [None]
    reader.close()


def test_the_sync_reader_in_many_threads(redis_url: str, redis_client: redis.Redis) -> None:
    fill(redis_client, 400)
    store = RedisStore(redis_url)
    wrong: list[int] = []

    def worker(start: int) -> None:
        for i in range(start, 400, 8):
            rows = store.fetch_sync([Lookup(f"user:{i}", (b"a",)), Lookup(f"user:{i}", (b"b",))], 0)
            if rows != [[f"a-{i}".encode()], [f"b-{i}".encode()]]:
                wrong.append(i)

    before = connections(redis_client)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert connections(redis_client) - before == 8  # one socket per thread
    store.close()
    assert store.fetch_sync([Lookup("user:1", (b"a",))], 0) == [[b"a-1"]]  # reopened after close
    store.close()


def test_the_wsgi_adapter_reads_through_the_sync_reader(redis_url: str, make_token: TokenFactory) -> None:
    from signout import Revoker

    middleware = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url)
    token = make_token()

    def status() -> str:
        seen: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/me", "HTTP_AUTHORIZATION": f"Bearer {token}"}
        b"".join(middleware(environ, lambda s, h, e=None: seen.append(s)))
        return seen[0]

    assert status().startswith("200")
    Revoker(redis_url=redis_url, key=SECRET).revoke_sync(token)
    assert status().startswith("401")


def test_encode_writes_bulk_strings() -> None:
    assert encode("GET", b"k\r\n") == b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n"


def test_no_password_reaches_a_log(caplog: pytest.LogCaptureFixture, redis_url: str) -> None:
    with private_redis("--requirepass", PASSWORD) as port:
        url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0"
        with pytest.raises(StoreError):
            RedisStore(url).fetch_sync([Lookup("k", (b"f",))], 0)
        with pytest.raises(StoreError):
            run(lambda: bounded(RedisStore(url).fetch([Lookup("k", (b"f",))], 0)))
    assert PASSWORD not in caplog.text
