"""A smoke run with an independent SIP implementation: sipp watchers."""

import os
import shutil
import subprocess

import pytest

from harness import ROOT, free_port

SCENARIO = os.path.join(ROOT, "tests", "sipp", "subscribe.xml")


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) missing")
def test_sipp_watchers_subscribe_and_get_notified(kamailio, tmp_path, database):
    calls = 40
    result = subprocess.run(
        ["sipp", "-sf", SCENARIO, "-s", "sippbuddy", "-m", str(calls), "-r", "20",
         "-l", "20", "-i", "127.0.0.1", "-p", str(free_port()), "-timeout", "30s", "-timeout_error",
         "-trace_err", "-error_file", str(tmp_path / "errors.log"), "-nostdin",
         f"127.0.0.1:{kamailio.port}"],
        cwd=tmp_path, capture_output=True, timeout=60)
    errors = (tmp_path / "errors.log").read_text() if (tmp_path / "errors.log").exists() else ""
    assert result.returncode == 0, errors[-2000:] or result.stdout[-2000:]
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s",
                          ("sippbuddy@127.0.0.1",)) == [(calls,)]
