"""A real Redis Cluster for the tests: ``redis-server`` processes on 127.0.0.1, made into a
cluster with ``redis-cli --cluster create``, and the operations the tests put it through
(a primary killed, a slot migrated). Every process it starts, it stops."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from .conftest import missing_redis, spawn_redis, wait_for_redis


def _port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis wants it <= 55535."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return out.stdout


class Cluster:
    """``primaries`` primaries with ``replicas`` replicas each; ``node_timeout`` in ms (a killed
    primary's replica takes over about twice that later)."""

    def __init__(self, folder: Path, primaries: int = 3, replicas: int = 0, node_timeout: int = 15000) -> None:
        if shutil.which("redis-cli") is None:
            missing_redis("redis-cli is not installed")
        self.folder = folder
        self.ports = [_port_pair() for _ in range(primaries * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for p in self.ports:
                args = ["--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--dir", str(folder),
                        "--cluster-config-file", f"nodes-{p}.conf", "--save", "", "--appendonly", "no",
                        "--cluster-node-timeout", str(node_timeout),
                        # A replica's first copy at once, not after the 5 s Redis waits by default for more replicas.
                        "--repl-diskless-sync-delay", "0"]  # fmt: skip
                try:
                    self.processes[p] = spawn_redis(args)
                except FileNotFoundError:
                    missing_redis("redis-server is not installed")
                    raise
            for p, process in self.processes.items():
                wait_for_redis(p, process)
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def alive(self) -> list[int]:
        return [p for p, process in self.processes.items() if process.poll() is None]

    def wait_ok(self, seconds: float = 30) -> None:
        """Until every live node says ``cluster_state:ok``, and every live replica has its first
        copy of its primary (a replica promoted before that would lose what the primary held)."""
        deadline = time.monotonic() + seconds
        for p in self.alive():  # every node, not just one: each comes to agree on its own
            while "cluster_state:ok" not in _cli(p, "cluster", "info"):
                assert time.monotonic() < deadline, "the cluster did not converge"
                time.sleep(0.1)
            while "role:slave" in (info := _cli(p, "info", "replication")) and "master_link_status:up" not in info:
                assert time.monotonic() < deadline, f"the replica on port {p} did not get its first copy"
                time.sleep(0.1)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.alive()[0])

    def nodes(self, port: int | None = None) -> list[list[str]]:
        """``CLUSTER NODES`` as one live node (``port``, else the first) sees it: a list of fields per node."""
        return [line.split() for line in _cli(port or self.alive()[0], "cluster", "nodes").splitlines() if line]

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``, as the cluster says now."""
        slot = int(_cli(self.alive()[0], "cluster", "keyslot", key).strip())
        return self.owner(slot)

    def owner(self, slot: int) -> int:
        for fields in self.nodes():
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                if span.startswith("["):
                    continue
                first, _, last = span.partition("-")
                if int(first) <= slot <= int(last or first):
                    return int(fields[1].split("@")[0].rpartition(":")[2])
        raise LookupError(f"no primary serves slot {slot}")

    def primaries(self) -> list[int]:
        return sorted(
            int(f[1].split("@")[0].rpartition(":")[2])
            for f in self.nodes()
            if "master" in f[2] and "fail" not in f[2] and len(f) > 8
        )

    def kill(self, port: int) -> None:
        """SIGKILL: no goodbye to its clients or to the cluster."""
        process = self.processes[port]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def wait_failover(self, dead: int, before: set[int], seconds: float = 30) -> int:
        """Until a replica has taken over from ``dead`` (one of the primaries ``before``) and the
        cluster is whole again; the new primary's port."""
        deadline = time.monotonic() + seconds
        while True:
            now = set(self.primaries())
            if dead not in now and now - before:
                try:
                    self.wait_ok(max(1.0, deadline - time.monotonic()))
                    return (now - before).pop()
                except AssertionError:
                    pass
            assert time.monotonic() < deadline, f"no replica took over from {dead}"
            time.sleep(0.1)

    def ids(self) -> dict[int, str]:
        """Each node's id by its port."""
        return {int(f[1].split("@")[0].rpartition(":")[2]): f[0] for f in self.nodes()}

    def start_migration(self, slot: int, to: int) -> int:
        """Mark ``slot`` as moving to the primary on port ``to`` (importing there, migrating at its
        owner), as ``redis-cli --cluster reshard`` begins; its owner's port."""
        source = self.owner(slot)
        ids = self.ids()
        _cli(to, "cluster", "setslot", str(slot), "importing", ids[source])
        _cli(source, "cluster", "setslot", str(slot), "migrating", ids[to])
        return source

    def finish_migration(self, slot: int, source: int, to: int) -> None:
        """Move the slot's keys and give it to ``to`` on every primary, as a reshard ends."""
        while True:
            keys = _cli(source, "cluster", "getkeysinslot", str(slot), "100").split()
            if not keys:
                break
            _cli(source, "migrate", "127.0.0.1", str(to), "", "0", "5000", "keys", *keys)
        ids = self.ids()
        for p in self.primaries():
            _cli(p, "cluster", "setslot", str(slot), "node", ids[to])
        self.wait_ok()

    def unassign(self, slot: int) -> int:
        """Make every node forget ``slot`` (``CLUSTER DELSLOTS``): no primary serves it; its keys
        stay where they are. The nodes go on serving the other slots (as a node's view can show
        in the middle of a failover), so a client may read them. Its former owner's port."""
        owner = self.owner(slot)
        for port in self.alive():
            _cli(port, "config", "set", "cluster-require-full-coverage", "no")
            _cli(port, "cluster", "delslots", str(slot))
        return owner

    def assign(self, slot: int, to: int) -> None:
        """Give ``slot`` to the primary on port ``to`` (``CLUSTER ADDSLOTS``), and wait for the cluster."""
        _cli(to, "cluster", "addslots", str(slot))
        for port in self.alive():
            _cli(port, "config", "set", "cluster-require-full-coverage", "yes")
        self.wait_ok()

    def migrate(self, slot: int, to: int) -> None:
        """Move ``slot`` (and its keys) to the primary on port ``to``."""
        self.finish_migration(slot, self.start_migration(slot, to), to)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
