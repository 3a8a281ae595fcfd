"""End to end over real HTTP on loopback: uvicorn serving each guard, a load generator hitting it.

Each variant runs in its own uvicorn process (one worker, h11 or httptools as
installed, no access log) on a free 127.0.0.1 port, all against one private
redis-server:

* ``bare``            a raw ASGI app answering 200 "ok": the baseline.
* ``hmget-only``      no guard: one ``HMGET`` on signout's reader, then the bare app (the round
                      trip's own cost: the floor of any guard that asks Redis per request).
* ``hmget-pair``      the same with the two lookups signout's guard makes for a token with a
                      ``sub`` and a ``sid`` (its user's bucket, then its session's), pipelined.
* ``signout-redis``   ``SignOutMiddleware(app, key=..., redis_url=...)``.
* ``signout-frozen``  the same, with ``gc.freeze()`` after start-up (README, "Latency under load").
* ``signout-mirror``  the same with ``local_mirror=True``: no round trip per request.
* ``hand-written``    the pure-ASGI ``jwt.decode`` + ``EXISTS denylist:<jti>`` guard.
* ``bare-starlette``  a one-route Starlette app: the tutorial's baseline.
* ``tutorial``        the same guard as a Starlette ``BaseHTTPMiddleware``.

Load: ``wrk`` (1 thread, 64 connections, ``Authorization: Bearer <token>``,
one HS256 token reused) when it is installed, else a bounded Python generator
(64 httpx.AsyncClients of one connection each); the output says which. Every variant is
loaded for ``--seconds`` per round, rounds interleaved; req/s is the median.
A request's server-side cost is 1e6 / (req/s), as the one server process is
saturated, so a guard's overhead is that minus its bare app's. Any non-200
answer fails the run. Total time is bounded: at most 80 s of load (about 50 s in all by default).

    python benchmarks/bench_http.py [--quick] [--seconds S] [--rounds R] [--loadgen wrk|httpx]
    python benchmarks/bench_http.py --floor   # bare, hmget-only, hmget-pair, signout-redis; 8 rounds
    python benchmarks/bench_http.py --workers # gunicorn, 1 and 2 workers, ASGI and WSGI (benchmarks/_workers.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
import redis.asyncio as aredis
from _common import (
    HandWrittenGuard,
    StealMeter,
    TutorialGuard,
    bare_app,
    free_port,
    keys_for,
    make_token,
    median,
    redis_server,
    redis_url,
    rotations,
    signout_kwargs,
    starlette_app,
    verdict,
    versions,
)

import signout
from signout.stores.wire.pipelined import AsyncReader
from signout.stores.wire.resp import Address

VARIANTS = (
    "bare",
    "hmget-only",
    "hmget-pair",
    "signout-redis",
    "signout-frozen",
    "signout-mirror",
    "hand-written",
    "bare-starlette",
    "tutorial",
)
BASELINE = {
    "hmget-only": "bare",
    "hmget-pair": "bare",
    "signout-redis": "bare",
    "signout-frozen": "bare",
    "signout-mirror": "bare",
    "hand-written": "bare",
    "tutorial": "bare-starlette",
}
#: ``--floor``: only what tells signout's own cost from the round trip's, measured longer.
FLOOR_VARIANTS = ("bare", "hmget-only", "hmget-pair", "signout-redis")
CONNECTIONS = 64


# ---- the server side (run in a subprocess: --serve NAME) --------------------------------------


_ONE_READ = (("signout:{0000}", (b"u", b"s", b"j")),)
# Field names as long as signout's (a kind letter and 12 digest bytes), in two buckets.
_PAIR_READ = (
    ("signout:{0001}", (b"u" + b"1" * 12, b"s" + b"2" * 12, b"j" + b"3" * 12)),
    ("signout:{0002}", (b"s" + b"2" * 12,)),
)


class HmgetOnly:
    """No guard: the bare app after one ``HMGET`` on signout's reader, the floor of any guard
    that asks Redis on every request (what the round trip alone costs the server)."""

    def __init__(self, url: str, lookups: Sequence[tuple[str, tuple[bytes, ...]]]) -> None:
        self.url = url
        self.lookups = lookups
        self.reader: AsyncReader | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.reader is None:
            self.reader = AsyncReader(Address.from_url(self.url), timeout=1.0)
        await self.reader.hmget_many(self.lookups)  # the call signout's guard makes
        await bare_app(scope, receive, send)


def serve(name: str, port: int, redis_port: int) -> None:
    import uvicorn

    keys = keys_for("HS256")
    url = redis_url(redis_port)
    app: Any
    if name == "bare":
        app = bare_app
    elif name in ("signout-redis", "signout-frozen"):
        app = signout.SignOutMiddleware(bare_app, redis_url=url, **signout_kwargs(keys))
    elif name == "hmget-only":
        app = HmgetOnly(url, _ONE_READ)
    elif name == "hmget-pair":
        app = HmgetOnly(url, _PAIR_READ)
    elif name == "signout-mirror":
        app = signout.SignOutMiddleware(bare_app, redis_url=url, local_mirror=True, **signout_kwargs(keys))
    elif name == "hand-written":
        app = HandWrittenGuard(bare_app, aredis.Redis.from_url(url), keys)
    elif name == "bare-starlette":
        app = starlette_app()
    elif name == "tutorial":
        app = TutorialGuard(starlette_app(), aredis.Redis.from_url(url), keys)
    else:
        raise SystemExit(f"unknown variant {name}")
    logging.getLogger("signout").setLevel(logging.ERROR)
    if name == "signout-frozen":
        # What README "Latency under load" advises: everything made at start-up leaves the
        # collector's reach, so its full collections stop walking it (the HTTP p99 tail).
        gc.collect()
        gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


@contextlib.contextmanager
def servers(redis_port: int, token: str, variants: Sequence[str]) -> Iterator[tuple[dict[str, int], dict[str, int]]]:
    """Each variant's uvicorn process, answering 200 before this yields its port and its pid;
    all stopped on exit."""
    ports = {name: free_port() for name in variants}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--port", str(port), "--redis-port", str(redis_port)]
        )
        for name, port in ports.items()
    ]
    try:
        for name, port in ports.items():
            wait_ready(name, port, token)
        yield ports, {name: proc.pid for name, proc in zip(ports, procs, strict=True)}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(name: str, port: int, token: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on port {port}") from None
            time.sleep(0.05)
    response = httpx.get(f"http://127.0.0.1:{port}/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    if response.status_code != 200 or response.text != "ok":
        raise RuntimeError(f"{name}: expected 200 'ok', got {response.status_code} {response.text!r}")


# ---- load -----------------------------------------------------------------------------------


def load_wrk(port: int, token: str, seconds: float) -> tuple[float, float, int]:
    """(requests/s, p99 latency in ms, requests answered) from one wrk run."""
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "2s", "--latency"]
    argv += ["-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/me"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures on port {port}:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    done = re.search(r"(\d+) requests in", out)
    if rps is None or done is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return float(rps.group(1)), (float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")), int(done.group(1))


async def _load_httpx(port: int, token: str, seconds: float, cap: int) -> tuple[float, float, int]:
    url = f"http://127.0.0.1:{port}/me"
    # One AsyncClient per connection: a single client's pool shared by 64 concurrent
    # requests collapses (about 120 req/s here, against about 1,100 this way).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.AsyncClient(limits=limits, headers=headers, timeout=5) for _ in range(CONNECTIONS)]
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.perf_counter() < deadline and len(latencies) < cap:
            sent = time.perf_counter()
            response = await client.get(url)
            latencies.append(time.perf_counter() - sent)
            failures += response.status_code != 200

    try:
        await asyncio.gather(*[worker(c) for c in clients])
        elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            await client.aclose()
    if failures:
        raise RuntimeError(f"{failures} requests to port {port} were not answered 200")
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99)] * 1000, len(latencies)


def load_httpx(port: int, token: str, seconds: float) -> tuple[float, float, int]:
    """The fallback: 64 connections (httpx.AsyncClient), bounded by time and by 200,000 requests."""
    return asyncio.run(_load_httpx(port, token, seconds, 200_000))


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, user and system: ``/proc/<pid>/schedstat`` (nanoseconds), else
    ``/proc/<pid>/stat`` (clock ticks, 10 ms steps: about 1% of a 2 s round)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- main -----------------------------------------------------------------------------------


@dataclass
class Runs:
    """Each variant's rounds: requests/s, p99 latency (ms), and server CPU per request (us)."""

    rps: dict[str, list[float]]
    p99: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def ratio(self, series: dict[str, list[float]], a: str, b: str) -> float:
        """The median of each round's a / b (rounds are interleaved, so each pair shares its moment)."""
        return median([x / y for x, y in zip(series[a], series[b], strict=True)])


def report(runs: Runs, loadgen: str, args: argparse.Namespace) -> None:
    rps, p99, cpu = runs.rps, runs.p99, runs.cpu
    med = {n: median(v) for n, v in rps.items()}
    cost = {n: 1e6 / r for n, r in med.items()}  # server us per request
    over = {n: cost[n] - cost[b] for n, b in BASELINE.items() if n in rps}

    def round_overheads(name: str) -> list[float]:
        return [1e6 / x - 1e6 / b for x, b in zip(rps[name], rps[BASELINE[name]], strict=True)]

    def overhead_ratio(a: str, b: str) -> float | None:
        """None when an overhead drowned in the noise (<= 0): then the load generator, not the server, was the limit."""
        pairs = list(zip(round_overheads(a), round_overheads(b), strict=True))
        return median([x / y for x, y in pairs]) if all(x > 0 and y > 0 for x, y in pairs) else None

    print(f"\n== HTTP/1.1 over loopback, uvicorn, {loadgen}, {CONNECTIONS} connections, one HS256 token reused;")
    print(f"   {args.rounds} interleaved rounds of {args.seconds:g} s per variant; ratios: median of each round's")
    if args.floor:
        floor(runs)
    else:
        versus(overhead_ratio, functools.partial(runs.ratio, rps), med, over)
    print("\n  against the bare app (issue 12: req/s >= 0.95x, p99 <= 1.2x; per core: bare's CPU per request / its)")
    for guard in [n for n in BASELINE if BASELINE[n] == "bare" and n != "hand-written" and n in rps]:
        ratio = runs.ratio(rps, guard, "bare")
        tail = runs.ratio(p99, guard, "bare")
        core = runs.ratio(cpu, "bare", guard)
        print(
            f"  {guard:<15} req/s {ratio:5.2f}x {verdict(ratio, 0.95, at_most=False):<4}"
            f"  p99 {tail:5.2f}x {verdict(tail, 1.2, at_most=True):<4}"
            f"  per core {core:5.2f}x  ({median(p99[guard]):.2f} vs {median(p99['bare']):.2f} ms)"
        )
    print(
        f"\n  {'variant':<15} {'baseline':<15} {'req/s':>9} {'us/req':>8} {'overhead us':>11} {'p99 ms':>7}"
        f" {'cpu us/req':>10} rounds (req/s)"
    )
    for name in rps:
        o = f"{over[name]:.1f}" if name in over else "-"
        rounds = " ".join(f"{r:,.0f}" for r in rps[name])
        base = BASELINE.get(name, "-")
        print(
            f"  {name:<15} {base:<15} {med[name]:9,.0f} {cost[name]:8.1f} {o:>11} {median(p99[name]):7.2f}"
            f" {median(cpu[name]):10.1f} {rounds}"
        )


def versus(
    overhead_ratio: Callable[[str, str], float | None],
    rps_ratio: Callable[[str, str], float],
    med: dict[str, float],
    over: dict[str, float],
) -> None:
    """signout against the guards people write instead."""
    print("  ratio                                          measured  (target from the in-process guard)  absolute")
    rows = [
        ("signout-redis / hand-written overhead", overhead_ratio("signout-redis", "hand-written"), 0.90),
        ("signout-redis / tutorial overhead", overhead_ratio("signout-redis", "tutorial"), 0.60),
        ("signout-redis / hand-written requests/s", rps_ratio("signout-redis", "hand-written"), None),
        ("signout-redis / tutorial requests/s", rps_ratio("signout-redis", "tutorial"), None),
    ]
    for what, value, goal in rows:
        shown = "n/a" if value is None else f"{value:.2f}x"
        judged = "(no target)" if goal is None else f"<= {goal:.2f}x {verdict(value, goal, at_most=True)}"
        other = what.split(" / ")[1].split()[0]
        if what.endswith("overhead"):
            absolute = f"{over['signout-redis']:.1f} vs {over[other]:.1f} us/request"
        else:
            absolute = f"{med['signout-redis']:,.0f} vs {med[other]:,.0f} req/s"
        print(f"  {what:<46} {shown:>8}  {judged:<36}  {absolute}")


def floor(runs: Runs) -> None:
    """What of the gap to the bare app is the round trip's, and what is signout's own.

    ``hmget-pair`` makes the read signout's guard makes (two lookups, one write, one wait)
    on the same reader and does nothing else: signout-redis / hmget-pair is signout's own
    cost, hmget-pair / bare the round trip's. Server CPU per request is steadier than
    requests/s on a shared machine (a round's req/s moves with what else runs; its CPU
    per request barely does): "per core" compares that, b's over a's."""
    print("  share                                  req/s     p99  per core")
    for what, a, b in (
        ("one HMGET, bare app after it", "hmget-only", "bare"),
        ("signout's read (two HMGETs)", "hmget-pair", "bare"),
        ("signout's own (the guard, no I/O)", "signout-redis", "hmget-pair"),
        ("signout-redis in all", "signout-redis", "bare"),
    ):
        print(
            f"  {what:<36} {runs.ratio(runs.rps, a, b):5.2f}x  {runs.ratio(runs.p99, a, b):5.2f}x"
            f"  {runs.ratio(runs.cpu, b, a):5.2f}x  {a} / {b}: CPU {median(runs.cpu[a]):.1f} vs"
            f" {median(runs.cpu[b]):.1f} us per request"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, help="load seconds per variant per round (default 2; --quick 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 4; --quick 2)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="bare, hmget-only, hmget-pair, signout-redis, 8 rounds: signout's own cost against the round trip's",
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="gunicorn with 1 and 2 workers (uvicorn workers; gthread for WSGI): req/s and revocation lag",
    )
    parser.add_argument("--trials", type=int, default=30, help="--workers: lag trials per server (default 30)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis_port)
        return
    variants = FLOOR_VARIANTS if args.floor else VARIANTS
    args.rounds = min(args.rounds or (2 if args.quick else 8 if args.floor else 4), 8)
    # Loaded time is capped at 80 s (rounds x variants x seconds), plus ~10 s of start-up and warm-up.
    args.seconds = min(args.seconds or (1.0 if args.quick else 2.0), max(1.0, 80 / (args.rounds * len(variants))))
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    loadgen = "wrk 1 thread" if use_wrk else "Python load generator (httpx.AsyncClient)"
    load = load_wrk if use_wrk else load_httpx
    print(f"{versions()}, uvicorn {version('uvicorn')}")
    print(f"load generator: {loadgen}")
    if not use_wrk:
        print("note: a Python load generator may saturate before the server does; then the ratios understate")
        print("      the differences (install wrk for the real numbers)")
    started = time.perf_counter()
    steal = StealMeter()
    if args.workers:
        from _workers import run as run_workers

        with redis_server() as redis_port:
            assert redis_port is not None
            run_workers(redis_port, args.seconds, min(args.rounds, 4), min(max(args.trials, 5), 500), load)
        print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")
        return
    token = make_token(keys_for("HS256"))
    runs = Runs({n: [] for n in variants}, {n: [] for n in variants}, {n: [] for n in variants})
    with redis_server() as redis_port:
        assert redis_port is not None
        with servers(redis_port, token, variants) as (ports, pids):
            for name in variants:  # warm-up: a short run each, not counted
                load(ports[name], token, 0.5)
            for name in rotations(variants, args.rounds):
                used = cpu_seconds(pids[name])
                r, p, answered = load(ports[name], token, args.seconds)
                runs.rps[name].append(r)
                runs.p99[name].append(p)
                runs.cpu[name].append((cpu_seconds(pids[name]) - used) / answered * 1e6)
    report(runs, loadgen, args)
    print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")


if __name__ == "__main__":
    main()
