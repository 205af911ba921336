"""bin/pa-run as the README's quick start runs it, and .ci/sip-check against
it as CI does: the settings it writes authenticate clients (auth:
implicit, the documented default), so the check passes only once its user
was created with pa-admin."""

import os
import signal
import subprocess
import sys

import pytest
import yaml

from harness import ROOT, Process, ScratchDatabase, free_port

SIP_CHECK = os.path.join(ROOT, ".ci", "sip-check")


class PaRun(Process):
    def __init__(self, directory, db_url: str):
        self.dir = directory
        self.port = free_port()
        self.config = os.path.join(directory, "pa.yaml")
        self.log_path = os.path.join(directory, "pa-run.log")
        self.env = dict(os.environ, PA_SKIP_INSTALL="1", PA_CONFIG=self.config, PA_DB_URL=db_url,
                        PA_LISTEN=f"127.0.0.1:{self.port}", PA_RUNDIR=os.path.join(directory, "run"),
                        PA_CHILDREN="2")

    def start(self) -> "PaRun":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([os.path.join(ROOT, "bin", "pa-run")], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def stop(self, timeout: float = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def sip_check(run: PaRun, password: str | None = None, wait: int = 60):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    env.pop("PA_CHECK_PASSWORD", None)
    if password:
        env["PA_CHECK_PASSWORD"] = password
    return subprocess.run(["/usr/bin/python3", SIP_CHECK, f"127.0.0.1:{run.port}", "127.0.0.1",
                           str(wait)], env=env, capture_output=True, text=True, timeout=wait + 30)


@pytest.fixture
def pa_run(tmp_path):
    db = ScratchDatabase(schema=False)
    run = PaRun(str(tmp_path), db.url()).start()
    yield run
    run.stop()
    if sys.exc_info()[0]:
        print(run.log()[-3000:])
    db.drop()


def test_pa_run_writes_safe_settings_and_the_ci_check_needs_a_created_user(pa_run):
    first = sip_check(pa_run)
    with open(pa_run.config) as f:
        written = yaml.safe_load(f)
    assert written["auth"] == "implicit"
    # Nobody may publish or subscribe without credentials.
    assert first.returncode == 1, first.stdout + pa_run.log()[-2000:]
    assert "PUBLISH 407" in first.stdout
    assert "pa-admin user add" in pa_run.log()
    # The operator's way to create users, then the CI check as CI runs it.
    added = subprocess.run([os.path.join(ROOT, "bin", "pa-admin"), "user", "add",
                            "ci@example.org"], input="check-password\n", capture_output=True,
                           text=True, env=pa_run.env, timeout=30)
    assert added.returncode == 0, added.stderr
    second = sip_check(pa_run, "check-password", wait=10)
    assert second.returncode == 0, second.stdout + pa_run.log()[-2000:]
    assert "PUBLISH 200, SUBSCRIBE 200" in second.stdout
