"""SecurityMiddleware in front of a tiny Starlette app: every protection refuses what it must and
lets through what it must."""

from __future__ import annotations

import base64
import logging

import pytest
from starlette.websockets import WebSocketDisconnect

from aiocelerymon.web.passwords import hash_password, hash_token
from aiocelerymon.web.security import (
    CSP,
    CSRF_COOKIE,
    SESSION_COOKIE,
    ApiToken,
    PasswordUser,
    Role,
    SecuritySettings,
)

ALICE = ("alice", "alice-pw:with:colons")
BOB = ("bob", "bob-pw")
CAROL = ("carol", "carol-pw")
CAROL_HASH = hash_password(CAROL[1])
OPERATOR_TOKEN = "op-token-0123456789abcdef"
VIEWER_TOKEN = "view-token-0123456789abcdef"


def settings(**overrides):
    base = {
        "users": [
            PasswordUser.plain(*ALICE, role=Role.OPERATOR),
            PasswordUser.plain(*BOB, role=Role.VIEWER),
            PasswordUser.hashed(CAROL[0], CAROL_HASH, Role.OPERATOR),
        ],
        "tokens": [
            ApiToken.plain(OPERATOR_TOKEN, Role.OPERATOR),
            ApiToken.hashed("dash", hash_token(VIEWER_TOKEN), Role.VIEWER),
        ],
        "failure_limit": 3,
        "failure_window": 60.0,
        "failure_delay": 0.5,
        "failure_max_delay": 4.0,
    }
    base.update(overrides)
    return SecuritySettings(**base)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def login(client, user, password, next_="", **headers):
    return client.post(
        "/login", data={"username": user, "password": password, "next": next_}, headers=headers
    )


# ------------------------------------------------------------------------------------------
# Authentication and roles


def test_unauthenticated_api_call_is_401_with_challenges(make_client):
    client = make_client(settings())
    response = client.get("/api/workers")
    assert response.status_code == 401
    assert response.json() == {"error": "authentication required"}
    challenges = response.headers.get_list("www-authenticate")
    assert any(c.startswith("Basic ") for c in challenges)
    assert any(c.startswith("Bearer ") for c in challenges)
    for path in ("/", "/api/guarded", "/api/worker/shutdown/w1"):
        method = "POST" if "shutdown" in path else "GET"
        assert client.request(method, path).status_code == 401


def test_browser_navigation_is_sent_to_the_login_form(make_client):
    client = make_client(settings())
    response = client.get("/api/workers?refresh=1", headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fapi%2Fworkers%3Frefresh%3D1"
    # The page's own fetches get a 401 without a Basic challenge (no browser dialog).
    response = client.get("/api/workers", headers={"Accept": "text/html", "Sec-Fetch-Mode": "cors"})
    assert response.status_code == 401
    assert not response.headers.get_list("www-authenticate")


@pytest.mark.parametrize(
    ("user", "role"), [(ALICE, "operator"), (BOB, "viewer"), (CAROL, "operator")]
)
def test_basic_auth_sets_the_principal(make_client, user, role):
    client = make_client(settings())
    body = client.get("/api/workers", auth=user).json()
    assert body["user"] == user[0]
    assert body["role"] == role
    assert body["authenticated"] is True
    assert "authenticated" in body["scopes"] and "viewer" in body["scopes"]
    assert ("operator" in body["scopes"]) == (role == "operator")


def test_hashed_user_twice(make_client):
    # The second request is answered from the verified cache; both must succeed.
    client = make_client(settings())
    assert client.get("/api/workers", auth=CAROL).status_code == 200
    assert client.get("/api/workers", auth=CAROL).status_code == 200
    assert client.get("/api/workers", auth=(CAROL[0], "nope")).status_code == 401


def test_viewer_cannot_control_operator_can(make_client):
    client = make_client(settings())
    refused = client.post("/api/worker/shutdown/w1", auth=BOB)
    assert refused.status_code == 403
    assert "operator" in refused.json()["error"]
    done = client.post("/api/worker/shutdown/w1", auth=ALICE)
    assert done.status_code == 200
    assert done.json() == {"done": "w1", "by": "alice"}
    for method in ("PUT", "PATCH", "DELETE"):
        assert client.request(method, "/api/workers", auth=BOB).status_code == 403
        assert client.request(method, "/api/workers", auth=ALICE).status_code == 200


def test_starlette_requires_sees_the_roles(make_client):
    client = make_client(settings())
    assert client.get("/api/guarded", auth=ALICE).status_code == 200
    assert client.get("/api/guarded", auth=BOB).status_code == 403


def test_read_only_refuses_every_control(make_client):
    client = make_client(settings(read_only=True))
    response = client.post("/api/worker/shutdown/w1", auth=ALICE)
    assert response.status_code == 403
    assert "read-only" in response.json()["error"]
    response = client.post("/api/worker/shutdown/w1", headers=bearer(OPERATOR_TOKEN))
    assert response.status_code == 403
    assert client.get("/api/workers", auth=ALICE).status_code == 200
    info = client.get("/auth/session", auth=ALICE).json()
    assert info["read_only"] is True and info["can_control"] is False


def test_bearer_tokens(make_client):
    client = make_client(settings())
    body = client.get("/api/workers", headers=bearer(OPERATOR_TOKEN)).json()
    assert body["role"] == "operator" and body["user"].startswith("token-")
    assert OPERATOR_TOKEN not in body["user"]
    assert client.post("/api/worker/shutdown/w", headers=bearer(OPERATOR_TOKEN)).status_code == 200
    assert client.get("/api/workers", headers=bearer(VIEWER_TOKEN)).json()["user"] == "dash"
    assert client.post("/api/worker/shutdown/w", headers=bearer(VIEWER_TOKEN)).status_code == 403
    assert client.get("/api/workers", headers=bearer(OPERATOR_TOKEN + "x")).status_code == 401
    # A token is not a password, nor the other way round.
    assert client.get("/api/workers", auth=("token", OPERATOR_TOKEN)).status_code == 401
    assert client.get("/api/workers", headers=bearer(ALICE[1])).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "Digest abc",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Bearer",
    ],
)
def test_malformed_authorization_is_401(make_client, authorization):
    client = make_client(settings())
    assert client.get("/api/workers", headers={"Authorization": authorization}).status_code == 401


def test_authorization_header_is_judged_alone(make_client):
    # A wrong header with a valid session cookie is still refused: no silent fallback.
    client = make_client(settings())
    assert login(client, *ALICE).status_code == 303
    assert client.get("/api/workers").status_code == 200
    assert client.get("/api/workers", auth=(ALICE[0], "wrong")).status_code == 401


# ------------------------------------------------------------------------------------------
# Public paths


def test_public_paths(make_client):
    client = make_client(settings())
    assert client.get("/healthcheck").text == "OK"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/login").status_code == 200
    assert client.get("/login.css").headers["content-type"].startswith("text/css")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", auth=BOB).status_code == 200
    # Only safe methods are public.
    assert client.post("/static/app.js").status_code == 401
    assert client.post("/healthcheck").status_code == 401


def test_metrics_public(make_client):
    client = make_client(settings(metrics_public=True))
    assert client.get("/metrics").text == "celery_workers 1\n"
    assert client.get("/metrics/x").status_code == 404  # public, and not there
    assert client.get("/metricsx").status_code == 401
    assert client.get("/api/workers").status_code == 401


async def raw_get(app, path, headers=()):
    """One request straight into the ASGI app, spelt exactly so (HTTP clients normalise)."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "scheme": "http",
        "http_version": "1.1",
        "headers": [(b"host", b"monitor.example"), *headers],
        "client": ("203.0.113.5", 1),
        "server": ("monitor.example", 80),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


@pytest.mark.parametrize(
    "path",
    ["/static/../api/workers", "/static/./x", "//static/app.js", "/static//app.js", "/static/.."],
)
async def test_oddly_spelt_paths_are_never_public(make_client, path):
    app = make_client(settings()).app
    assert await raw_get(app, path) == 401
    basic = (b"authorization", b"Basic " + base64.b64encode(":".join(BOB).encode()))
    assert await raw_get(app, path, [basic]) != 401


def test_public_paths_see_an_unauthenticated_user(make_client):
    # Even with credentials sent, nothing is checked on a public path (no scrypt for free).
    client = make_client(settings())
    response = client.get("/static/app.js", auth=CAROL)
    assert response.status_code == 200


# ------------------------------------------------------------------------------------------
# No credentials configured


def test_no_auth_loopback_everyone_is_an_anonymous_operator(make_client):
    client = make_client(SecuritySettings(), base_url="http://127.0.0.1:5555")
    body = client.get("/api/workers").json()
    assert body["user"] == "anonymous" and body["role"] == "operator"
    assert body["authenticated"] is False
    assert client.post("/api/worker/shutdown/w1").status_code == 200
    assert (
        make_client(SecuritySettings(), base_url="http://localhost:5555").get("/").status_code
        == 200
    )
    assert make_client(SecuritySettings(), base_url="http://[::1]:5555").get("/").status_code == 200


def test_no_auth_read_only(make_client):
    client = make_client(SecuritySettings(read_only=True), base_url="http://127.0.0.1")
    assert client.get("/api/workers").status_code == 200
    assert client.post("/api/worker/shutdown/w1").status_code == 403


def test_no_auth_refuses_a_rebound_host_name(make_client):
    # A page on evil.example rebinding its name to 127.0.0.1 sends Host: evil.example.
    client = make_client(SecuritySettings(), base_url="http://evil.example:5555")
    assert client.get("/api/workers").status_code == 403
    assert client.get("/healthcheck").status_code == 403
    insecure = make_client(SecuritySettings(insecure_no_auth=True), base_url="http://evil.example")
    assert insecure.get("/api/workers").status_code == 200


def test_no_auth_cross_site_post_refused(make_client):
    client = make_client(SecuritySettings(), base_url="http://127.0.0.1:5555")
    response = client.post("/api/worker/shutdown/w1", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    ok = client.post("/api/worker/shutdown/w1", headers={"Origin": "http://127.0.0.1:5555"})
    assert ok.status_code == 200


# ------------------------------------------------------------------------------------------
# Failed logins


def test_failures_slow_down_then_429(make_client, sleeps, clock):
    client = make_client(settings())
    for _ in range(3):
        assert client.get("/api/workers", auth=(ALICE[0], "wrong")).status_code == 401
    assert sleeps.delays == [0.5, 1.0, 2.0]
    blocked = client.get("/api/workers", auth=ALICE)  # even the right password now
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) == 60
    assert sleeps.delays == [0.5, 1.0, 2.0]  # a 429 is answered at once, and checks nothing
    clock.now += 61
    assert client.get("/api/workers", auth=ALICE).status_code == 200


def test_failures_counted_per_user_across_addresses(make_client, sleeps):
    first = make_client(settings(), client=("198.51.100.0", 1))
    clients = [first] + [
        make_client(app=first.app, client=(f"198.51.100.{i}", 1)) for i in range(1, 4)
    ]
    for i in range(3):
        assert clients[i].get("/api/workers", auth=(BOB[0], "x")).status_code == 401
    assert clients[3].get("/api/workers", auth=BOB).status_code == 429
    # Another user from that fresh address is not held back.
    assert clients[3].get("/api/workers", auth=ALICE).status_code == 200


def test_failures_counted_per_address_across_users(make_client):
    client = make_client(settings())
    for name in ("mallory1", "mallory2", "alice"):
        assert client.get("/api/workers", auth=(name, "x")).status_code == 401
    assert client.get("/api/workers", auth=BOB).status_code == 429
    assert client.get("/api/workers", headers=bearer(OPERATOR_TOKEN)).status_code == 429


def test_bad_tokens_slow_down_too(make_client, sleeps):
    client = make_client(settings())
    for _ in range(3):
        assert client.get("/api/workers", headers=bearer("guess-" * 4)).status_code == 401
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert client.get("/api/workers", headers=bearer(OPERATOR_TOKEN)).status_code == 429


def test_success_forgets_the_users_failures(make_client, sleeps):
    client = make_client(settings(failure_limit=3))
    app = client.app
    for _ in range(2):
        client.get("/api/workers", auth=(ALICE[0], "x"))
    assert client.get("/api/workers", auth=ALICE).status_code == 200
    assert app.failures.retry_after(user="alice") is None


def test_login_form_failures(make_client, sleeps):
    client = make_client(settings())
    for _ in range(3):
        page = login(client, ALICE[0], "nope")
        assert page.status_code == 401
        assert "Invalid user name or password." in page.text
        assert "nope" not in page.text
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert login(client, *ALICE).status_code == 429


def test_failure_delays_are_capped(make_client, sleeps):
    client = make_client(settings(failure_limit=50))
    for _ in range(8):
        client.get("/api/workers", auth=("alice", "x"))
    assert sleeps.delays[-1] == 4.0 and max(sleeps.delays) == 4.0


# ------------------------------------------------------------------------------------------
# Login, sessions, CSRF


def test_login_page_has_no_inline_script_or_style(make_client):
    page = make_client(settings()).get("/login?next=/api/workers")
    assert page.status_code == 200
    text = page.text.lower()
    assert "<form" in text and 'name="password"' in text and 'value="/api/workers"' in text
    assert "<script" not in text and "<style" not in text and "style=" not in text
    assert " on" not in text.replace("<button", "")  # no onclick= / onload= handlers


def test_login_sets_a_protected_session(make_client):
    client = make_client(settings())
    response = login(client, *ALICE, next_="/api/workers")
    assert response.status_code == 303
    assert response.headers["location"] == "/api/workers"
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    csrf = next(c for c in cookies if c.startswith(CSRF_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/" in session
    assert "Secure" not in session  # plain http here
    assert "HttpOnly" not in csrf  # the page's script reads it
    assert ALICE[1] not in " ".join(cookies)
    body = client.get("/api/workers").json()
    assert body["user"] == "alice" and body["role"] == "operator"


def test_session_cookie_secure_over_https(make_client):
    client = make_client(settings(), base_url="https://monitor.example")
    cookies = login(client, *ALICE).headers.get_list("set-cookie")
    assert all("; Secure" in c for c in cookies)


def test_cookie_auth_needs_csrf_token_for_unsafe_requests(make_client):
    client = make_client(settings())
    login(client, *ALICE)
    refused = client.post("/api/worker/shutdown/w1")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert (
        client.post("/api/worker/shutdown/w1", headers={"X-CSRF-Token": "forged"}).status_code
        == 403
    )
    info = client.get("/auth/session").json()
    assert info["user"] == "alice" and info["can_control"] is True
    assert info["csrf_header"] == "X-CSRF-Token"
    token = info["csrf_token"]
    assert token == client.cookies[CSRF_COOKIE]
    done = client.post("/api/worker/shutdown/w1", headers={"X-CSRF-Token": token})
    assert done.status_code == 200 and done.json()["by"] == "alice"


def test_basic_and_token_requests_need_no_csrf_token(make_client):
    client = make_client(settings())
    assert client.post("/api/worker/shutdown/w1", auth=ALICE).status_code == 200
    assert client.post("/api/worker/shutdown/w1", headers=bearer(OPERATOR_TOKEN)).status_code == 200
    assert client.get("/auth/session", auth=ALICE).json()["csrf_token"] is None


def test_viewer_session_cannot_control_even_with_token(make_client):
    client = make_client(settings())
    login(client, *BOB)
    token = client.get("/auth/session").json()["csrf_token"]
    assert (
        client.post("/api/worker/shutdown/w1", headers={"X-CSRF-Token": token}).status_code == 403
    )
    assert client.get("/auth/session").json()["can_control"] is False


def test_cross_site_requests_refused_even_with_credentials(make_client):
    client = make_client(settings())
    evil = {"Origin": "https://evil.example"}
    # A browser replays cached Basic credentials by itself: the Origin gives it away.
    assert client.post("/api/worker/shutdown/w1", auth=ALICE, headers=evil).status_code == 403
    same = {"Origin": "http://monitor.example"}
    assert client.post("/api/worker/shutdown/w1", auth=ALICE, headers=same).status_code == 200
    assert (
        client.post("/api/worker/shutdown/w1", auth=ALICE, headers={"Origin": "null"}).status_code
        == 403
    )
    # The page's own posts say "Origin: null" under Referrer-Policy: no-referrer; only the
    # browser's Sec-Fetch-Site (which no page can forge) tells them from a sandboxed frame.
    mine = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/worker/shutdown/w1", auth=ALICE, headers=mine).status_code == 200
    sandboxed = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/worker/shutdown/w1", auth=ALICE, headers=sandboxed).status_code == 403
    assert login(client, *ALICE, **sandboxed).status_code == 403
    # Login CSRF: a foreign page cannot log the browser in as someone else.
    assert login(client, *ALICE, **evil).status_code == 403
    # Reading is fine (the browser withholds the response without CORS anyway).
    assert client.get("/api/workers", auth=ALICE, headers=evil).status_code == 200


def test_open_redirects_refused(make_client):
    client = make_client(settings())
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "api", "/a\r\nb"):
        assert login(client, *ALICE, next_=target).headers["location"] == "/"


def test_tampered_or_expired_session_refused(make_client, clock):
    client = make_client(settings(session_max_age=600))
    login(client, *ALICE)
    value = client.cookies[SESSION_COOKIE]
    payload, signature = value.split(".")
    forged = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==").replace(b"alice", b"carol")
        )
        .rstrip(b"=")
        .decode()
    )
    client.cookies.set(SESSION_COOKIE, f"{forged}.{signature}")
    assert client.get("/api/workers").status_code == 401
    client.cookies.set(SESSION_COOKIE, value)
    assert client.get("/api/workers").status_code == 200
    clock.now += 601
    assert client.get("/api/workers").status_code == 401


def test_sessions_across_processes_need_the_same_secret(make_client):
    secret = "a-long-shared-cookie-secret"
    first = make_client(settings(cookie_secret=secret))
    login(first, *ALICE)
    value = first.cookies[SESSION_COOKIE]
    second = make_client(settings(cookie_secret=secret))
    second.cookies.set(SESSION_COOKIE, value)
    assert second.get("/api/workers").json()["user"] == "alice"
    other = make_client(settings(cookie_secret="another-long-cookie-secret"))
    other.cookies.set(SESSION_COOKIE, value)
    assert other.get("/api/workers").status_code == 401
    random_secret = make_client(settings())
    random_secret.cookies.set(SESSION_COOKIE, value)
    assert random_secret.get("/api/workers").status_code == 401


def test_password_or_role_change_ends_sessions(make_client):
    secret = "a-long-shared-cookie-secret"
    client = make_client(settings(cookie_secret=secret))
    login(client, *ALICE)
    value = client.cookies[SESSION_COOKIE]
    for user in (
        PasswordUser.plain("alice", "a-new-password", Role.OPERATOR),
        PasswordUser.plain(*ALICE, role=Role.VIEWER),
    ):
        changed = make_client(SecuritySettings(users=[user], cookie_secret=secret))
        changed.cookies.set(SESSION_COOKIE, value)
        assert changed.get("/api/workers").status_code == 401


def test_logout(make_client):
    client = make_client(settings())
    login(client, *ALICE)
    old = client.cookies[SESSION_COOKIE]
    page = client.get("/logout")
    assert page.status_code == 200 and "<script" not in page.text
    token = client.get("/auth/session").json()["csrf_token"]
    assert token in page.text  # the form posts it back
    assert client.post("/logout").status_code == 403  # no token: a foreign page cannot log us out
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert all("Max-Age=0" in c for c in response.headers.get_list("set-cookie"))
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, old)  # a stolen copy of the cookie is dead too
    assert client.get("/api/workers").status_code == 401


def test_login_form_limits(make_client):
    client = make_client(settings())
    assert (
        client.post(
            "/login",
            content=b"x" * 20000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        ).status_code
        == 400
    )
    assert client.post("/login", json={"username": "alice"}).status_code == 400
    assert client.put("/login").status_code == 405


def test_no_password_users_no_login_form(make_client):
    client = make_client(SecuritySettings(tokens=[ApiToken.plain(OPERATOR_TOKEN)]))
    assert client.get("/login").status_code == 303
    response = client.get("/api/workers", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="aiocelerymon"']


# ------------------------------------------------------------------------------------------
# CORS and headers


def test_no_cors_by_default(make_client):
    client = make_client(settings())
    response = client.get("/api/workers", auth=ALICE, headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/api/workers",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 401
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_only_for_configured_origins(make_client):
    client = make_client(settings(cors_origins=["https://app.example"]))
    allowed = {"Origin": "https://app.example"}
    response = client.get("/api/workers", headers={**allowed, **bearer(VIEWER_TOKEN)})
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]
    other = client.get(
        "/api/workers", headers={"Origin": "https://evil.example", **bearer(VIEWER_TOKEN)}
    )
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options(
        "/api/worker/shutdown/w1",
        headers={
            **allowed,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-evil",
        },
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization"
    # A configured origin may control with a token (it is not cross-site for us).
    done = client.post("/api/worker/shutdown/w1", headers={**allowed, **bearer(OPERATOR_TOKEN)})
    assert done.status_code == 200


@pytest.mark.parametrize("path", ["/api/workers", "/healthcheck", "/login", "/nope"])
def test_security_headers_everywhere(make_client, path):
    client = make_client(settings())
    for response in (client.get(path), client.get(path, auth=ALICE)):
        headers = response.headers
        assert headers["content-security-policy"] == CSP
        assert "unsafe-inline" not in CSP and "default-src 'self'" in CSP
        assert "frame-ancestors 'none'" in CSP
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/workers", auth=ALICE).headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------
# Proxies


def test_forwarded_headers_ignored_from_other_addresses(make_client):
    client = make_client(settings(forwarded_allow_ips=["10.0.0.0/8"]), client=("203.0.113.5", 1))
    body = client.get(
        "/api/workers",
        auth=ALICE,
        headers={
            "X-Forwarded-For": "192.0.2.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "spoofed.example",
            "X-Forwarded-Prefix": "/spoof",
        },
    ).json()
    assert body["client"] == "203.0.113.5"
    assert body["scheme"] == "http"
    assert body["host"] == "monitor.example"
    assert body["forwarded_for"] is None  # removed, so nothing downstream believes it
    assert body["root_path"] == ""


def test_forwarded_headers_from_a_trusted_proxy(make_client):
    client = make_client(settings(forwarded_allow_ips=["10.0.0.0/8"]), client=("10.1.2.3", 1))
    headers = {
        "X-Forwarded-For": "192.0.2.1, 10.9.9.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example",
        "X-Forwarded-Prefix": "/celery/",
    }
    body = client.get("/api/workers", auth=ALICE, headers=headers).json()
    assert body["client"] == "192.0.2.1"  # the nearest address that is not our proxy
    assert body["scheme"] == "https"
    assert body["host"] == "public.example"
    assert body["root_path"] == "/celery"
    response = login(client, *ALICE, **headers)
    assert response.headers["location"] == "/celery/"
    assert all(
        "Secure" in c and "Path=/celery" in c for c in response.headers.get_list("set-cookie")
    )
    # Same-origin is judged on the forwarded host.
    origin = {"Origin": "https://public.example"}
    assert (
        client.post("/api/worker/shutdown/w", auth=ALICE, headers={**headers, **origin}).status_code
        == 200
    )


def test_spoofed_forwarded_for_does_not_escape_the_limiter(make_client):
    client = make_client(settings(), client=("203.0.113.5", 1))
    for i in range(3):
        client.get("/api/workers", auth=(f"x{i}", "x"), headers={"X-Forwarded-For": f"192.0.2.{i}"})
    assert (
        client.get(
            "/api/workers", auth=ALICE, headers={"X-Forwarded-For": "192.0.2.77"}
        ).status_code
        == 429
    )


# ------------------------------------------------------------------------------------------
# URL prefix


def test_url_prefix(make_client):
    client = make_client(settings(url_prefix="/flower/"), prefix="/flower")
    assert client.get("/flower/healthcheck").text == "OK"
    assert client.get("/flower/api/workers").status_code == 401
    assert client.get("/flower/api/workers", auth=BOB).json()["user"] == "bob"
    assert client.post("/flower/api/worker/shutdown/w", auth=BOB).status_code == 403
    # Outside the prefix nothing is public, whatever its name.
    assert client.get("/healthcheck").status_code == 401
    assert client.get("/flower/login").status_code == 200
    response = client.get("/flower/api/workers", headers={"Accept": "text/html"})
    assert response.headers["location"].startswith("/flower/login?next=%2Fflower%2Fapi%2Fworkers")
    # /login without the prefix is not ours: like any path outside the prefix, it needs auth.
    assert login(client, *ALICE).status_code == 401
    response = client.post("/flower/login", data={"username": ALICE[0], "password": ALICE[1]})
    assert response.headers["location"] == "/flower/"
    assert "Path=/flower" in response.headers["set-cookie"]


# ------------------------------------------------------------------------------------------
# WebSockets


def test_websocket_needs_a_viewer(make_client):
    client = make_client(settings())
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/api/events"):
        pass
    assert info.value.code == 1008
    with client.websocket_connect("/api/events", headers=bearer(VIEWER_TOKEN)) as ws:
        assert ws.receive_json() == {"user": "dash"}


def test_websocket_cookie_from_another_site_refused(make_client):
    client = make_client(settings())
    login(client, *BOB)
    # Starlette's test client opens WebSockets on ws://testserver, whatever the base URL.
    cookie = {"Cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect(
            "/api/events", headers={**cookie, "Origin": "https://evil.example"}
        ),
    ):
        pass
    with client.websocket_connect(
        "/api/events", headers={**cookie, "Origin": "http://testserver"}
    ) as ws:
        assert ws.receive_json() == {"user": "bob"}


# ------------------------------------------------------------------------------------------
# Secrets stay secret


def test_no_secret_in_logs_or_reprs(make_client, caplog):
    secret = "cookie-secret-that-must-not-leak"
    conf = settings(cookie_secret=secret)
    caplog.set_level(logging.DEBUG)
    client = make_client(conf)
    login(client, ALICE[0], "typo-password")
    login(client, *ALICE)
    client.get("/api/workers", auth=(CAROL[0], "carol-wrong"))
    client.get("/api/workers", auth=CAROL)
    client.get("/api/workers", headers=bearer(OPERATOR_TOKEN + "-wrong"))
    client.get("/api/workers", auth=("p4ssw0rd-typed-as-user", "x"))
    secrets_ = [
        ALICE[1],
        BOB[1],
        CAROL[1],
        "typo-password",
        "carol-wrong",
        OPERATOR_TOKEN,
        VIEWER_TOKEN,
        CAROL_HASH,
        CAROL_HASH.split("$")[-1],
        secret,
        "p4ssw0rd-typed-as-user",
        client.cookies[SESSION_COOKIE],
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "authentication failed" in logged  # something was logged, just not the secrets
    shown = [
        logged,
        repr(conf),
        str(conf),
        repr(client.app),
        *map(repr, conf.users),
        *map(repr, conf.tokens),
    ]
    for text in shown:
        for value in secrets_:
            assert value not in text
    assert "alice" in repr(conf) and "<hidden>" in repr(conf)
