"""End-to-end tests of the device API (docs/DEVICES.md) against `ironbridge serve`.

    .venv/bin/python -m pytest tests/platform -q      # $IRONBRIDGE_BIN or target/debug/ironbridge

Fixtures
    platform      module scope: one server per test module (tests only add their own
                  uniquely named devices, so they stay independent)
    own_platform  function scope: a private server, for tests that restart or kill it
    api           the admin REST client of `platform` (ib_platform.Api)
    clients       factory for MQTT device connections, all closed at teardown:
                  clients.new(platform.mqtt_port, token, version=V311|V5, ...)

A failing test gets the server log tail attached to its report.
"""

from __future__ import annotations

import signal

import pytest

from ib_mqtt import Clients
from ib_platform import Api, Platform
from ib_smtp import LocalSmtp, Mailbox


def _start(workdir) -> Platform:
    return Platform(workdir).start()


def _finish(p: Platform) -> None:
    if p.proc is None:
        return
    # our own SIGKILL (kill9_restart, failed start) is not a crash
    crashed = p.proc.poll() is not None and p.proc.returncode not in (0, -signal.SIGKILL)
    rc = p.stop()
    if crashed:
        pytest.fail(f"ironbridge exited on its own with {rc}; log tail:\n{p.log_tail()}")
    if rc not in (0, None):
        pytest.fail(f"ironbridge exited with {rc} after SIGTERM; log tail:\n{p.log_tail()}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = _start(tmp_path_factory.mktemp("platform"))
    yield p
    _finish(p)


@pytest.fixture
def own_platform(tmp_path):
    p = _start(tmp_path / "platform")
    yield p
    _finish(p)


@pytest.fixture(scope="module")
def api(platform) -> Api:
    return platform.api


@pytest.fixture(scope="module")
def smtp():
    """A local SMTP server (ib_smtp.py) for the module; yields its Mailbox, `port` set."""
    box = Mailbox()
    server = LocalSmtp(box)
    server.start()
    box.port = server.port
    yield box
    server.stop()


@pytest.fixture
def clients():
    c = Clients()
    yield c
    c.close_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or rep.when not in ("setup", "call"):
        return
    seen = set()
    for v in getattr(item, "funcargs", {}).values():
        p = v if isinstance(v, Platform) else getattr(v, "platform", None)
        if isinstance(p, Platform) and id(p) not in seen:
            seen.add(id(p))
            rep.sections.append((f"ironbridge log ({p.log_path})", p.log_tail(8000)))
