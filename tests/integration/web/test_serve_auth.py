"""``aiocelerymon serve`` as a user starts it: a real process, real sockets, its security flags.

The embedded in-memory broker keeps this about the server; the routes against real workers and
brokers are the API tests' business.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2
import pytest

from aiocelerymon.web.passwords import hash_password, hash_token

pytestmark = pytest.mark.integration

TOKEN = "ci-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("serve-auth")
    users = directory / "users"
    users.write_text(
        f"olga:operator:{hash_password('olga-pw')}\n"
        f"victor:viewer:{hash_password('victor-pw', scheme='pbkdf2_sha256')}\n"
        f"ci:operator:{hash_token(TOKEN)}\n"
    )
    users.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOCELERYMON_", "FLOWER_"))}
    env["AIOCELERYMON_AUTH_FILE"] = str(users)
    process = subprocess.Popen(
        [sys.executable, "-m", "aiocelerymon", "-b", "memory://serve-auth", "serve",
         "--port", "0", "--url-prefix", "/celery", "--cookie-secret", "x" * 32],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    url = None
    lines = []
    while url is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"(http://127\.0\.0\.1:\d+/celery)/", line)
        url = match.group(1) if match else None
    try:
        assert url is not None, "".join(lines)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        rest = process.stderr.read()
        process.stderr.close()
        # Whatever it logged, no password, token or hash of them.
        for secret in ("olga-pw", "victor-pw", TOKEN, "scrypt$", "sha256$"):
            assert secret not in "".join(lines) + rest
        assert code == 0, rest


def test_serve_refuses_the_unauthenticated(server):
    with httpx2.Client(base_url=server) as http:
        assert http.get("/healthcheck").status_code == 200
        for path in ("/api/workers", "/api/tasks", "/api/openapi.json", "/api/queues/length"):
            response = http.get(path)
            assert response.status_code == 401, path
            assert response.headers["x-frame-options"] == "DENY"
        assert http.post("/api/task/revoke/abc").status_code == 401


def test_serve_roles_from_the_auth_file(server):
    with httpx2.Client(base_url=server, auth=("victor", "victor-pw")) as http:
        assert http.get("/api/workers").status_code == 200
        assert http.post("/api/task/revoke/abc").status_code == 403
    with httpx2.Client(base_url=server, auth=("olga", "olga-pw")) as http:
        assert http.post("/api/task/revoke/abc").status_code not in (401, 403)
    with httpx2.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        assert http.post("/api/task/revoke/abc").status_code not in (401, 403)


def test_serve_login_and_csrf(server):
    with httpx2.Client(base_url=server) as http:
        page = http.get("/api/workers", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/celery/login?next=")
        response = http.post("/login", data={"username": "olga", "password": "olga-pw"})
        assert response.status_code == 303 and response.headers["location"] == "/celery/"
        assert "Path=/celery" in response.headers["set-cookie"]
        info = http.get("/auth/session").json()
        assert info["user"] == "olga" and info["can_control"]
        assert http.post("/api/task/revoke/abc").status_code == 403
        ok = http.post("/api/task/revoke/abc", headers={"X-CSRF-Token": info["csrf_token"]})
        assert ok.status_code not in (401, 403)
