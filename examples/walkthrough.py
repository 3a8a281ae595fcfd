"""Walk through a real logout over real HTTP: login, /me, logout, /me, refresh; then single sign-out.

Starts the example app under uvicorn on a free loopback port (embedded store,
or Redis when REDIS_URL is set) and prints each step. Exits non-zero if any
step answers differently from what signout promises.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, redis_url: str | None) -> uvicorn.Server:
    # Plain HTTP on loopback, so the demo's cookies are not Secure: httpx's
    # cookie jar would not send them back over http (Chromium would: it treats
    # loopback as secure; tests/test_browser.py runs with Secure cookies).
    app = create_app(redis_url=redis_url, secure_cookies=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the example app did not start")
        time.sleep(0.02)
    return server


def main() -> int:
    redis_url = os.environ.get("REDIS_URL")
    port = free_port()
    server = serve(port, redis_url)
    store = f"Redis at {redis_url}" if redis_url else "embedded MemoryStore"
    print(f"example app on http://127.0.0.1:{port}, store: {store}")
    failures = 0

    def step(n: int, what: str, response: httpx.Response, expected: int) -> None:
        nonlocal failures
        ok = response.status_code == expected
        failures += not ok
        shown = response.text[:90]
        if "access_token" in shown:  # never print a token, even a demo one
            shown = "{access_token: <issued>, refresh_token cookie: <set, HttpOnly, Path=/auth/refresh>}"
        verdict = "ok" if ok else f"UNEXPECTED (wanted {expected})"
        print(f"{n}. {what:<46} -> {response.status_code} {verdict}  {shown}")

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            r = client.post("/auth/login", json={"username": "alice", "password": "demo"})
            step(1, "POST /auth/login (alice)", r, 200)
            access = r.json().get("access_token", "")
            old_refresh = client.cookies.get("refresh_token", path="/auth/refresh")
            auth = {"Authorization": f"Bearer {access}"}
            step(2, "GET /me with the access token", client.get("/me", headers=auth), 200)
            step(3, "POST /auth/logout", client.post("/auth/logout", headers=auth), 200)
            step(4, "GET /me with the same access token", client.get("/me", headers=auth), 401)
            replay = httpx.Client(base_url=f"http://127.0.0.1:{port}")
            replay.cookies.set("refresh_token", old_refresh or "", path="/auth/refresh")
            with replay:
                step(5, "POST /auth/refresh with the old refresh cookie", replay.post("/auth/refresh"), 401)
        print("single sign-out: two devices, one 'log out everywhere'")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as laptop, httpx.Client(base_url=base) as phone:
            devices = {}
            for n, (name, device) in enumerate((("laptop", laptop), ("phone", phone)), start=6):
                r = device.post("/auth/login", json={"username": "bob", "password": "demo"})
                step(n, f"POST /auth/login (bob, {name})", r, 200)
                devices[name] = {"Authorization": f"Bearer {r.json().get('access_token', '')}"}
            step(8, "GET /me on the phone", phone.get("/me", headers=devices["phone"]), 200)
            step(
                9, "GET /auth/logout-all on the laptop", laptop.get("/auth/logout-all", headers=devices["laptop"]), 200
            )
            step(10, "GET /me on the phone again", phone.get("/me", headers=devices["phone"]), 401)
            step(11, "POST /auth/refresh with the phone's cookie", phone.post("/auth/refresh"), 401)
    finally:
        server.should_exit = True
    print("every step behaved as promised" if not failures else f"{failures} step(s) misbehaved")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
