"""Developer and CI sessions. ``nox -l`` lists them; scripts/test runs the whole suite."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "unit"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST = nox.project.dependency_groups(PYPROJECT, "test")
LINT = nox.project.dependency_groups(PYPROJECT, "lint")
TYPECHECK = nox.project.dependency_groups(PYPROJECT, "typecheck")
#: One interop run per supported Celery minor, each against the kombu minor it shipped with:
#: celery 5.6's own pin admits kombu 5.7, which changes the Redis wire (binding Lua scripts).
CELERY_MINORS = {"5.5": "5.5", "5.6": "5.6", "5.7": "5.7"}
#: Flower, run next to our Node in the interop tests (tests/integration/interop/test_flower.py).
FLOWER = "flower==2.2.*"
#: Every broker variant (tests/support/interop.py) runs on the newest minor. The variants differ
#: in *our* settings (db number and key prefix, vhost and control exchange), the minors in
#: Celery's and kombu's wire (queue flags, reply shapes, kombu 5.7's Redis binding scripts, key
#: prefixing, dump timestamps): the older minors run every interop test once per broker, on the
#: variant that exercises the most of it (Redis on its own database with a key prefix; RabbitMQ
#: on "/" with Celery's defaults). Saves about half of each older minor's run.
NEWEST_MINOR = max(CELERY_MINORS, key=lambda v: tuple(map(int, v.split("."))))
OLDER_MINOR_VARIANTS = "redis-db-prefix,amqp"
#: In CI a broker that cannot start is a failure, never a skip (aiocelerymon/testing/brokers.py).
REQUIRE = {"AIOCELERYMON_REQUIRE_BROKERS": "1"}
#: celery-exporter as the package index has it, for tests/integration/interop/test_metrics_parity.
CELERY_EXPORTER = "prometheus-exporter-celery"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (format + lint) and the import-layer contract (wire -> transports -> protocol)."""
    session.install("-e", ".[all]", *LINT)
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[all,testing]", *TYPECHECK)
    session.run("mypy")


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests: no network, no broker."""
    session.install("-e", ".[all]", *TEST)
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """Real RabbitMQ and Redis: transport contract, adapters, test bed."""
    session.install("-e", ".[all]", *TEST)
    session.run(
        "pytest",
        "tests/integration",
        "-m",
        "not interop and not browser",
        *session.posargs,
        env=REQUIRE,
    )


@nox.session(default=False)
@nox.parametrize("celery", list(CELERY_MINORS))
def interop(session: nox.Session, celery: str) -> None:
    """Real Celery workers of one minor answer us, on both brokers."""
    kombu = CELERY_MINORS[celery]
    # celery-exporter, for the metrics parity test: its newest release pins redis<6, which
    # kombu 5.7's Redis transport refuses, so it runs in the 5.6 session.
    parity = [CELERY_EXPORTER] if celery == "5.6" else []
    session.install(
        "-e", ".[all]", *TEST, f"celery[redis]=={celery}.*", f"kombu=={kombu}.*", FLOWER, *parity
    )  # fmt: skip
    env, marks = dict(REQUIRE), "interop and not browser"
    if celery != NEWEST_MINOR:
        env["AIOCELERYMON_INTEROP_VARIANTS"] = OLDER_MINOR_VARIANTS
        marks = "interop and not newest_minor and not browser"
    session.run("pytest", "tests/integration", "-m", marks, *session.posargs, env=env)


@nox.session(default=False)
def browser(session: nox.Session) -> None:
    """The page in Debian's Chromium (Playwright, never its browser download), real workers.

    Writes the screenshots in docs/screenshots/. ``AIOCELERYMON_CHROMIUM`` names another
    Chromium binary (default /usr/bin/chromium).
    """
    session.install("-e", ".[all]", *TEST)
    session.run("pytest", "tests/integration", "-m", "browser", *session.posargs, env=REQUIRE)


@nox.session(default=False)
def examples(session: nox.Session) -> None:
    """examples/: a user's project tested with our pytest plugin, real worker, both brokers."""
    session.install("-e", ".[testing,all]", "pytest-timeout", "celery[redis]")
    session.chdir("examples")
    session.run("pytest", *session.posargs, env=REQUIRE)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks, ours side by side with Celery's; results go to docs/benchmarks.md."""
    session.install(
        "-e", ".[all]", "celery[redis]", "flower==2.2.*", "packaging", "httpx", "playwright"
    )  # fmt: skip
    # celery-exporter's Exporter, in process: without its redis<6 pin (kombu 5.7 needs 6.1).
    session.install("--no-deps", CELERY_EXPORTER)
    session.install("loguru", "flask", "waitress", "prometheus-client>=0.21,<0.22")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job on the embedded in-memory broker: no broker to install.

    On a terminal it opens the live monitor (q quits); without one it prints the events in
    Celery's dump format for 5 s. ``nox -s demo -- --dump --duration 10`` passes options on.
    """
    session.install("-e", ".[tui]")
    session.run("aiocelerymon", "demo", *session.posargs)
