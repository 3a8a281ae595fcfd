"use strict";
// The demo page's client: the access token is kept in memory only (never in
// localStorage or a script-readable cookie); the refresh token is an HttpOnly
// cookie the browser sends to /auth/refresh by itself.
(() => {
  let accessToken = null;
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const status = $("status");
  const tokenState = $("token-state");

  function setToken(token) {
    accessToken = token;
    tokenState.textContent = token ? "yes" : "none";
  }

  function show(label, text) {
    const count = Number(log.dataset.count) + 1;
    const line = `${count}. ${label} -> ${text}`;
    log.textContent += line + "\n";
    log.dataset.count = String(count);
    status.textContent = line;
  }

  async function call(label, method, path, { json, bearer = false } = {}) {
    const headers = { Accept: "application/json" };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    if (bearer && accessToken) headers.Authorization = `Bearer ${accessToken}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      show(label, `network error: ${error}`);
      return null;
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    // Never print a token, even a demo one.
    const shown = body && body.access_token ? { ...body, access_token: "<kept in memory>" } : body;
    show(label, `${response.status} ${JSON.stringify(shown)}`);
    return { status: response.status, body };
  }

  $("login").addEventListener("click", async () => {
    const answer = await call("POST /auth/login", "POST", "/auth/login", {
      json: { username: $("username").value, password: $("password").value },
    });
    if (answer && answer.status === 200) setToken(answer.body.access_token);
  });

  $("me").addEventListener("click", () => call("GET /me", "GET", "/me", { bearer: true }));

  $("refresh").addEventListener("click", async () => {
    const answer = await call("POST /auth/refresh", "POST", "/auth/refresh");
    if (answer && answer.status === 200) setToken(answer.body.access_token);
  });

  $("logout").addEventListener("click", async () => {
    const answer = await call("POST /auth/logout", "POST", "/auth/logout", { bearer: true });
    // On 503 the revocation was not written: keep the token so a retry can revoke it.
    if (answer && answer.status === 200) setToken(null);
  });
})();
