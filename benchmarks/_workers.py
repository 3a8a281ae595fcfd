"""``bench_http.py --workers``: signout as it is deployed, several worker processes behind one port.

Two stacks: gunicorn with uvicorn workers (ASGI) and gunicorn with gthread workers (WSGI, 4
threads each); 1 and 2 workers; three variants: the bare app, ``signout-redis`` and
``signout-mirror``. Each server is loaded with wrk (64 connections) for ``--seconds`` per round,
rounds interleaved, and reports req/s. Then, for the signout variants, the revocation lag across
workers: a token is used on keep-alive connections held by every worker (each app answers with
its worker's pid, so the benchmark knows which worker a connection reached), logged out on one
of them, and timed until every worker refuses it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import free_port, keys_for, make_token, median, percentile, redis_url, rotations, signout_kwargs, stop

import signout

STACKS = ("asgi", "wsgi")
VARIANTS = ("bare", "signout-redis", "signout-mirror")
WORKERS = (1, 2)
HERE = Path(__file__).resolve().parent


# ---- the apps (gunicorn imports this module: "_workers:app('asgi', 'bare', 6379)") ---------------


async def _pid_asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


def _pid_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(stack: str, name: str, redis_port: int) -> Any:
    """The app each worker serves: answers 200 with its pid, guarded as ``name`` says."""
    bare: Any = _pid_asgi if stack == "asgi" else _pid_wsgi
    if name == "bare":
        return bare
    kw = {**signout_kwargs(keys_for("HS256")), "redis_url": redis_url(redis_port)}
    if name == "signout-mirror":
        kw["local_mirror"] = True
    middleware = signout.SignOutMiddleware if stack == "asgi" else signout.SignOutWSGIMiddleware
    return middleware(bare, **kw)


@contextmanager
def gunicorn(stack: str, name: str, workers: int, redis_port: int) -> Iterator[int]:
    """A gunicorn server on a free loopback port, answering before this yields; stopped on exit."""
    port = free_port()
    kind = ["-k", "uvicorn.workers.UvicornWorker"] if stack == "asgi" else ["-k", "gthread", "--threads", "4"]
    argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), *kind, "-b", f"127.0.0.1:{port}"]
    argv += ["--chdir", str(HERE), "--log-level", "warning", f"_workers:app({stack!r}, {name!r}, {redis_port})"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        token = make_token(keys_for("HS256"))
        while True:
            try:
                status, _ = _get(http.client.HTTPConnection("127.0.0.1", port, timeout=2), token)
                if status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"gunicorn ({stack}, {name}, {workers} workers) did not answer:\n{err}")
            time.sleep(0.1)
        yield port
    finally:
        stop(process, 10)


def _get(conn: http.client.HTTPConnection, token: str) -> tuple[int, str]:
    conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    return response.status, response.read().decode()


# ---- revocation lag across workers -----------------------------------------------------------


def by_worker(port: int, workers: int, token: str) -> dict[str, http.client.HTTPConnection]:
    """A keep-alive connection held by each worker (the pid each answers with)."""
    found: dict[str, http.client.HTTPConnection] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        status, pid = _get(conn, token)
        if status != 200:
            raise RuntimeError(f"a valid token was answered {status}")
        if pid in found:
            conn.close()
        else:
            found[pid] = conn
        if len(found) == workers:
            return found
    raise RuntimeError(f"reached {len(found)} of {workers} workers in 200 connections")


def lag_trials(port: int, workers: int, trials: int) -> list[float]:
    """Seconds from a logout's 200 (at one worker) until every worker refuses the token."""
    keys = keys_for("HS256")
    conns = by_worker(port, workers, make_token(keys))
    lags = []
    for _ in range(trials):
        token = make_token(keys)
        for conn in conns.values():  # every worker has seen it (and, with a mirror, is in sync)
            assert _get(conn, token)[0] == 200
        first = next(iter(conns.values()))
        first.request("POST", "/auth/logout", headers={"Authorization": f"Bearer {token}"})
        response = first.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"logout answered {response.status}")
        done = time.perf_counter()
        waiting = dict(conns)
        deadline = time.monotonic() + 5
        while waiting:
            for pid, conn in list(waiting.items()):
                if _get(conn, token)[0] == 401:
                    del waiting[pid]
            if time.monotonic() > deadline:
                raise RuntimeError("a worker still accepted a logged-out token after 5 s")
        lags.append(time.perf_counter() - done)
    for conn in conns.values():
        conn.close()
    return lags


# ---- the run ---------------------------------------------------------------------------------


def run(redis_port: int, seconds: float, rounds: int, trials: int, load: Callable[..., Any]) -> None:
    token = make_token(keys_for("HS256"))
    combos = [(s, w, v) for s in STACKS for w in WORKERS for v in VARIANTS]
    rps: dict[tuple[str, int, str], list[float]] = {c: [] for c in combos}
    lags: dict[tuple[str, int, str], list[float]] = {}
    for stack in STACKS:
        for workers in WORKERS:
            group = [(stack, workers, v) for v in VARIANTS]
            with contextlib.ExitStack() as stack_cm:
                ports = {c: stack_cm.enter_context(gunicorn(c[0], c[2], c[1], redis_port)) for c in group}
                for c in group:
                    load(ports[c], token, 0.5)  # warm-up: every worker's mirror in sync, caches warm
                for name in rotations(list(VARIANTS), rounds):
                    c = (stack, workers, name)
                    rps[c].append(load(ports[c], token, seconds)[0])
                for c in group:
                    if c[2] != "bare":
                        lags[c] = lag_trials(ports[c], workers, trials)
    print(f"\n== Several workers behind one port: gunicorn, wrk, 64 connections, {rounds} rounds of {seconds:g} s")
    print("   asgi: uvicorn workers; wsgi: gthread workers, 4 threads each. req/s: median of rounds;")
    print(f"   lag: from a logout's 200 at one worker until every worker refuses the token ({trials} trials;")
    print("   it includes one request to each worker, so its floor is that request's own time)")
    head = ("stack", "workers", "variant", "req/s", "vs bare", "lag p50 ms", "lag p99 ms")
    print("  {:<5} {:>7} {:<15} {:>8} {:>8} {:>11} {:>11}".format(*head))
    for stack, workers, name in combos:
        bare = median(rps[(stack, workers, "bare")])
        got = median(rps[(stack, workers, name)])
        lag = lags.get((stack, workers, name))
        p50 = f"{median(lag) * 1e3:11.2f}" if lag else f"{'-':>11}"
        p99 = f"{percentile(lag, 99) * 1e3:11.2f}" if lag else f"{'-':>11}"
        print(f"  {stack:<5} {workers:>7} {name:<15} {got:8,.0f} {got / bare:7.2f}x {p50} {p99}")
