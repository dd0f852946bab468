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
#: In CI a broker that cannot start is a failure, never a skip (aiocelerymon/testing/brokers.py).
REQUIRE = {"AIOCELERYMON_REQUIRE_BROKERS": "1"}


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
    session.run("pytest", "tests/integration", "-m", "not interop", *session.posargs, env=REQUIRE)


@nox.session(default=False)
@nox.parametrize("celery", list(CELERY_MINORS))
def interop(session: nox.Session, celery: str) -> None:
    """Real Celery workers of one minor answer us, on both brokers."""
    kombu = CELERY_MINORS[celery]
    session.install(
        "-e", ".[all]", *TEST, f"celery[redis]=={celery}.*", f"kombu=={kombu}.*", FLOWER
    )  # fmt: skip
    session.run("pytest", "tests/integration", "-m", "interop", *session.posargs, env=REQUIRE)


@nox.session(default=False)
def examples(session: nox.Session) -> None:
    """examples/: a user's project tested with our pytest plugin, real worker, both brokers."""
    session.install("-e", ".[testing,all]", "pytest-timeout", "celery[redis]")
    session.chdir("examples")
    session.run("pytest", *session.posargs, env=REQUIRE)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks, ours side by side with Celery's; results go to docs/benchmarks.md."""
    session.install("-e", ".[all]", "celery[redis]", "flower==2.2.*", "packaging", "httpx")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job on the embedded in-memory broker: no broker to install.

    On a terminal it opens the live monitor (q quits); without one it prints the events in
    Celery's dump format for 5 s. ``nox -s demo -- --dump --duration 10`` passes options on.
    """
    session.install("-e", ".[tui]")
    session.run("aiocelerymon", "demo", *session.posargs)
