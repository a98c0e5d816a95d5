"""The short variant of scripts/loadtest.py: two browser sessions on one app server, each
checked against a serial computation of its own digits and units."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_two_concurrent_sessions_each_see_their_own_points(capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    import loadtest

    if not os.path.exists(loadtest.CHROMIUM):
        pytest.skip(f"no chromium at {loadtest.CHROMIUM} (apt-get install chromium; .ci/run does this)")
    assert loadtest.main(["--sessions", "2", "--updates", "2"]) == 0
    out = capsys.readouterr().out
    assert "updates 4, mismatches 0, errors 0" in out, out
