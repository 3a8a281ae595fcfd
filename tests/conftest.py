"""Fixtures: a real redis-server per test session, token factories, every store, clients of the test app
through both adapters, and the servers and proxies the tests stop, pause or freeze."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis

SECRET = "test-secret-0123456789-abcdefghijklmnop"
ISS = "https://issuer.test"
NOW = 1_800_000_000.0  # a fixed "now" for tests that inject the clock
#: The password of the Redis URLs whose log lines must never show it.
PASSWORD = "s3cret-pa55"

TokenFactory = Callable[..., str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_redis(args: list[str]) -> subprocess.Popen[bytes]:
    """``redis-server ARGS`` in the background; ``FileNotFoundError`` when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    return subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_redis(port: int, process: subprocess.Popen[bytes], ping: Callable[[], object] | None = None) -> None:
    """Until it answers PING (or ``ping()`` passes); ``RuntimeError`` if it exits or takes over 10 s."""
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                (ping or client.ping)()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.02)
    finally:
        client.close()


class RedisServer:
    """A redis-server of our own on a free loopback port; nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = spawn_redis(
            ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        )
        wait_for_redis(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def missing_redis(reason: str) -> None:
    # Under CI a skipped real-Redis test is a failure: the suite must prove
    # itself against a real server, not quietly fall back.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"real Redis is required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except (FileNotFoundError, RuntimeError) as exc:
        missing_redis(f"cannot start redis-server: {exc}")
        raise
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis_server.client()
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISS, "sub": "alice", "sid": "s-1", "jti": "j-1", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def make_token() -> TokenFactory:
    """``make_token(sub="bob", jti=None)``: an HS256 token; ``None`` drops a claim."""

    def make(
        key: str | bytes = SECRET, algorithm: str = "HS256", headers: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        return jwt.encode(claims(**kw), key, algorithm=algorithm, headers=headers)

    return make


@pytest.fixture(scope="session")
def root() -> Path:
    return Path(__file__).resolve().parent.parent


class Backend:
    """One kind of store, with a way to build it and to count what it holds."""

    def __init__(
        self,
        name: str,
        make: Callable[[], Any],
        count: Callable[[], int],
        keys: Callable[[], list[bytes]],
        make_sync: Callable[[], Any] | None = None,
    ):
        self.name = name
        self.make = make
        self.make_sync = make_sync or make
        self.count = count
        self.keys = keys


def _redis_backend(
    name: str, make: Callable[[], Any], sync: redis.Redis, make_sync: Callable[[], Any] | None = None
) -> Backend:
    def keys() -> list[bytes]:
        return list(sync.scan_iter(match=b"*"))

    def count() -> int:
        return sum(int(sync.hlen(k)) for k in keys())

    return Backend(name, make, count, keys, make_sync)


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every end-to-end test runs on each store: same cases, every variant."""
    from signout import MemoryStore, RedisStore

    if request.param == "memory":
        holder: dict[str, MemoryStore] = {}

        def make_memory() -> MemoryStore:
            holder["store"] = MemoryStore()
            return holder["store"]

        def count_memory() -> int:
            store = holder.get("store")
            return 0 if store is None else sum(len(f) for _, f in store._buckets.values())

        def keys_memory() -> list[bytes]:
            store = holder.get("store")
            return [] if store is None else [k.encode() for k in store._buckets]

        yield Backend("memory", make_memory, count_memory, keys_memory)
    elif request.param == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()
        sync = fakeredis.FakeRedis(server=server)
        yield _redis_backend(
            "fakeredis",
            lambda: RedisStore(lambda: fakeredis.FakeAsyncRedis(server=server)),
            sync,
            lambda: RedisStore(fakeredis.FakeRedis(server=server)),
        )
    else:
        yield request.getfixturevalue("redis_backend")


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[Backend]:
    """The session's real redis-server alone (``backend`` runs the memory and fake stores too)."""
    from signout import RedisStore

    real = redis.Redis.from_url(redis_url)
    yield _redis_backend("redis", lambda: RedisStore(redis_url), real)
    real.close()


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, backend: Backend) -> Callable[..., Any]:
    """Clients of the test app (``client(**kwargs)``, kwargs for the middleware): every case runs
    through both adapters (one core, two kinds of I/O), on every store."""
    return make_client(request.param, backend, "https://app.test")


@pytest.fixture(params=["asgi", "wsgi"])
def real_client(request: pytest.FixtureRequest, redis_backend: Backend) -> Callable[..., Any]:
    """As ``client``, through both adapters, over the session's real Redis only."""
    return make_client(request.param, redis_backend, "https://app.test")


@pytest.fixture
def store_keys(redis_url: str) -> Iterator[Callable[[], list[bytes]]]:
    """The keys in the session's real Redis, sorted (``:changes`` ones left out)."""
    real = redis.Redis.from_url(redis_url)
    yield lambda: sorted(k for k in real.scan_iter(match=b"*") if not k.endswith(b":changes"))
    real.close()


@pytest.fixture
def dead_url() -> str:
    """A Redis URL, with a password, where nothing listens."""
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FreezableProxy]:
    """A ``FreezableProxy`` in front of the session's real Redis."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    p = FreezableProxy(port)
    yield p
    p.close()


def make_client(adapter: str, backend: Backend, base_url: str) -> Callable[..., Any]:
    """A factory of HTTP clients for the app wrapped by one adapter on one backend."""
    import httpx
    from starlette.testclient import TestClient

    from signout import SignOutMiddleware, SignOutWSGIMiddleware

    from .apps import starlette_app, wsgi_app

    def build(**kwargs: Any) -> Any:
        kwargs.setdefault("key", SECRET)
        if adapter == "asgi":
            middleware = SignOutMiddleware(starlette_app(), store=backend.make(), **kwargs)
            # No "with": every request runs in a fresh event loop, as SPEC section 5 warns.
            return TestClient(middleware, base_url=base_url)
        wrapped = SignOutWSGIMiddleware(wsgi_app(), store=backend.make_sync(), **kwargs)
        return httpx.Client(transport=PEP3333Transport(wrapped), base_url=base_url)  # type: ignore[arg-type]

    return build


class PEP3333Transport:
    """httpx transport into a WSGI app, building the environ as servers do (PEP 3333).

    httpx's own WSGITransport decodes headers as ASCII (so a garbage byte
    raises in the test, not in the app) and keeps only the last of repeated
    headers; servers decode latin-1 and join repeats with ", ".
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def handle_request(self, request: Any) -> Any:
        import io

        import httpx

        request.read()
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": request.url.scheme,
            "wsgi.input": io.BytesIO(request.content),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": request.url.path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": request.url.query.decode("latin-1"),
            "SERVER_NAME": request.url.host,
            "SERVER_PORT": str(request.url.port or 443),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
        }
        for raw_key, raw_value in request.headers.raw:
            key = raw_key.decode("latin-1").upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            value = raw_value.decode("latin-1")
            environ[key] = f"{environ[key]}, {value}" if key in environ else value
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return lambda _: None

        body = b"".join(self.app(environ, start_response))
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in seen["headers"]]
        return httpx.Response(int(seen["status"].split()[0]), headers=headers, content=body)

    def close(self) -> None:
        pass


# ---- a network that swallows packets without closing the socket --------------------------------


class FreezableProxy:
    """TCP proxy to Redis on loopback; ``freeze()`` stops forwarding but keeps sockets open."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.1)
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                downstream, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set() and not self.stopped.is_set():
                time.sleep(0.05)  # swallow: hold the bytes, send nothing, close nothing
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.stopped.set()
        for s in self.sockets:
            s.close()
