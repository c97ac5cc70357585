"""Developer sessions. CI machines have only Python 3.11: sessions run on whatever
interpreter nox runs under unless a version is asked for, so none fails for a missing one.

    nox -s tests lint typecheck docs        # what CI checks
    nox -s bench                            # benchmarks (prints ratios; not a test)
    nox -s record -- --record-mode=rewrite  # re-record cassettes (simulator or DCI6_URL)
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.error_on_external_run = True
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (PostgreSQL tests start a throwaway server from local binaries)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "bench", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ (settings in pyproject.toml)."""
    session.install("-e", ".[postgres,fast]", "mypy", "pytest")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (``nox -s docs -- serve`` to preview)."""
    session.install("-e", ".[docs]")
    if session.posargs and session.posargs[0] == "serve":
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict", "--clean")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: client overhead, model parsing, provisioning throughput."""
    session.install("-e", ".[postgres,fast,test]")
    for script in ("bench/client_overhead.py", "bench/parse_servers.py", "bench/provision.py"):
        session.run("python", script, *session.posargs)


@nox.session
def record(session: nox.Session) -> None:
    """Re-record the client's cassettes from the simulator, or from a real DCImanager
    when DCI6_URL, DCI6_EMAIL and DCI6_PASSWORD are set. Secrets are always scrubbed."""
    session.install("-e", ".[test]")
    args = session.posargs or ["--record-mode=rewrite"]
    session.run("pytest", "tests/client/test_cassettes.py", "-p", "no:randomly", *args)
