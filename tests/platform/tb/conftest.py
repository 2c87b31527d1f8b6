"""ThingsBoard's Python SDK (tb-mqtt-client) against `ironbridge serve`.

Runs in its own venv (.venv-tb): the SDK installs tb-paho-mqtt-client, which replaces
the `paho` package. Only the paho-free process/REST helpers of the parent directory
(tests/platform/ib_platform.py) are shared.

    .venv-tb/bin/python -m pytest tests/platform/tb -q
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ib_platform import Platform  # noqa: E402


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("platform")).start()
    yield p
    crashed = p.proc.poll() is not None and p.proc.returncode != -signal.SIGKILL
    rc = p.stop()
    if crashed or rc != 0:
        pytest.fail(f"ironbridge exited with {rc} ({'on its own' if crashed else 'after SIGTERM'}); "
                    f"log tail:\n{p.log_tail()}")


@pytest.fixture(scope="module")
def api(platform):
    return platform.api


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        p = getattr(item, "funcargs", {}).get("platform")
        if isinstance(p, Platform):
            rep.sections.append((f"ironbridge log ({p.log_path})", p.log_tail(8000)))
