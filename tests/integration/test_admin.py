"""pa-admin against a real database, beside a real Kamailio that carries
out what needs SIP (watchers are told at once)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import settings
from harness import ROOT, Kamailio, ScratchDatabase
from helpers import pidf_body
from pa_handlers import schema
from pa_handlers.store import SCHEMA_VERSION
from sipua import SipUA, rand

# What `db upgrade` reports for an empty database: every schema file.
SCHEMA_FILES_APPLIED = [f"applied {os.path.basename(path)}" for _, path in schema.files()]



@pytest.fixture(scope="module")
def kamailio(database):
    # auth implicit: a new watcher waits for the presentity's (here the
    # operator's) decision.  Sweeps only at start: purge must bring one.
    k = Kamailio(settings(database, auth="implicit", timer_interval=3600)).start()
    yield k
    k.cleanup()


def admin(kamailio, *args, config=None, check=True):
    """python3 -m pa_handlers.admin, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "pa_handlers.admin", "--config", config or kamailio.config_path,
         *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def admin_json(kamailio, *args):
    return json.loads(admin(kamailio, "--json", *args).stdout)


@pytest.fixture
def ua(kamailio, database, presentity):
    """The presentity's own device: with auth on, only it may publish."""
    u = user_agent(kamailio, database, presentity[4:].split("@")[0])
    yield u
    u.close()


def user_agent(kamailio, database, user):
    """A UA with digest credentials in the subscriber table."""
    database.add_subscriber(user, "127.0.0.1", "secret")
    ua = SipUA(kamailio.address, user=user)
    ua.credentials = (user, "secret")
    return ua


def publish(ua, presentity, note):
    r = ua.request("PUBLISH", presentity, [("Event", "presence"),
                                           ("Content-Type", "application/pidf+xml")],
                   pidf_body(presentity, "t1", "open", note=note))
    assert r.status == 200
    return r


@pytest.fixture
def pending(kamailio, database, presentity):
    """A watcher whose subscription waits for a decision, and its dialog."""
    ua = user_agent(kamailio, database, "w" + rand(6))
    r, d = ua.subscribe(presentity)
    assert r.status == 200
    assert ua.wait_notify(d.call_id).subscription_state()[0] == "pending"
    yield ua, d
    ua.close()


def test_show_lists_publications_and_the_document(kamailio, ua, presentity):
    etag = publish(ua, presentity, "in a meeting").get("sip-etag")
    shown = admin_json(kamailio, "show", presentity)
    assert shown["presentity"] == presentity[4:]
    assert [p["etag"] for p in shown["publications"]] == [etag]
    assert "in a meeting" in shown["document"]
    text = admin(kamailio, "show", presentity).stdout
    assert text.splitlines()[0].split() == ["EVENT", "ETAG", "ORIGIN", "SOURCE", "PUBLISHER",
                                            "EXPIRES", "UPDATED"]
    assert etag in text and "in a meeting" in text


def test_presentities_are_listed_with_their_counts(kamailio, ua, presentity):
    publish(ua, presentity, "here")
    rows = admin_json(kamailio, "presentities", presentity[4:])
    assert rows == [{"presentity": presentity[4:], "domain": "registrar", "publications": 1,
                     "watchers": 0, "version": rows[0]["version"]}]
    assert rows[0]["version"] >= 1


def test_approve_tells_the_pending_watcher_at_once(kamailio, presentity, pending):
    watcher, d = pending
    [row] = admin_json(kamailio, "watchers", presentity)["subscriptions"]
    assert (row["watcher"], row["status"], row["last_notify"]) == \
        (watcher.aor[4:], "pending", "ok")
    out = admin(kamailio, "approve", presentity, watcher.aor).stdout
    assert "is active" in out
    n = watcher.wait_notify(d.call_id, count=2, timeout=5)
    assert n.subscription_state()[0] == "active"
    [row] = admin_json(kamailio, "watchers", presentity)["subscriptions"]
    assert row["status"] == "active"
    assert admin_json(kamailio, "watchers", presentity)["decisions"][0]["status"] == "active"


def test_reject_ends_the_subscription_as_rejected(kamailio, presentity, pending):
    watcher, d = pending
    admin(kamailio, "reject", presentity, watcher.aor)
    n = watcher.wait_notify(d.call_id, count=2, timeout=5)
    assert n.subscription_state() == ("terminated", {"reason": "rejected"})
    # The decision stands: subscribing again is refused.
    assert watcher.subscribe(presentity)[0].status == 403


def test_remove_ends_and_forgets(kamailio, presentity, pending):
    watcher, d = pending
    admin(kamailio, "approve", presentity, watcher.aor)
    watcher.wait_notify(d.call_id, count=2)
    admin(kamailio, "remove", presentity, watcher.aor)
    n = watcher.wait_notify(d.call_id, count=3, timeout=5)
    assert n.subscription_state() == ("terminated", {"reason": "deactivated"})
    assert admin_json(kamailio, "watchers", presentity) == {"subscriptions": [],
                                                            "decisions": []}


def test_end_one_subscription_by_call_id(kamailio, presentity, pending):
    watcher, d = pending
    admin(kamailio, "end", d.call_id)
    n = watcher.wait_notify(d.call_id, count=2, timeout=5)
    assert n.subscription_state() == ("terminated", {"reason": "deactivated"})
    r = admin(kamailio, "end", d.call_id, check=False)
    assert r.returncode == 2 and "no subscription with Call-ID" in r.stderr


def test_purge_has_kamailio_sweep_at_once(kamailio, database, presentity, pending):
    watcher, d = pending
    # Expired a moment ago; the next sweep is an hour away.
    database.query("UPDATE pa_subscription SET expires_at = UNIX_TIMESTAMP() - 1"
                   " WHERE call_id = %s", (d.call_id,))
    assert admin_json(kamailio, "purge")["subscriptions"] >= 1
    n = watcher.wait_notify(d.call_id, count=2, timeout=5)
    assert n.subscription_state() == ("terminated", {"reason": "timeout"})
    assert not database.query("SELECT 1 FROM pa_subscription WHERE call_id = %s",
                              (d.call_id,))


def test_counts_match_the_database(kamailio, database, ua, presentity):
    publish(ua, presentity, "x")
    counts = admin_json(kamailio, "counts")
    [(published,)] = database.query("SELECT COUNT(*) FROM pa_publication"
                                    " WHERE expires_at > UNIX_TIMESTAMP()")
    assert sum(v for k, v in counts.items() if k.startswith("publications")) == published
    assert "subscriptions presence pending" in admin(kamailio, "counts").stdout or \
        not database.query("SELECT 1 FROM pa_subscription WHERE status = 'pending'")


def test_a_bad_uri_is_a_clear_error(kamailio):
    r = admin(kamailio, "watchers", "sip:", check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("pa-admin: not a SIP URI") and "Traceback" not in r.stderr


def test_an_unreachable_database_is_a_clear_error(kamailio, tmp_path):
    config = tmp_path / "pa.yaml"
    config.write_text(yaml.safe_dump({"db_url": "mysql://u:p@127.0.0.1:1/x", "db_timeout": 1}))
    r = admin(kamailio, "counts", config=str(config), check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("pa-admin: database unavailable") and "Traceback" not in r.stderr
    assert "p@" not in r.stderr  # the password stays out of the message


def applied_schema_files() -> list[str]:
    """What `pa-admin db upgrade` says for an empty database: each of sql/."""
    return [f"applied {os.path.basename(path)}" for _, path in schema.files()]


def test_db_upgrade_builds_a_database_kamailio_runs_on(tmp_path):
    db = ScratchDatabase(schema=False)
    config = tmp_path / "pa.yaml"
    config.write_text(yaml.safe_dump({"db_url": db.url(), "auth": "none"}))
    try:
        k = Kamailio(settings(db))

        def run(*args):
            return admin(k, *args, config=str(config))
        ours = applied_schema_files()
        assert ours[0] == "applied 001_schema.sql"
        assert run("db", "upgrade", "--kamailio-tables").stdout.split("\n")[:-1] == ours + [
            "applied standard-create.sql", "applied usrloc-create.sql",
            "applied auth_db-create.sql"]
        assert json.loads(run("--json", "db", "version").stdout) == {
            "schema": SCHEMA_VERSION, "known": SCHEMA_VERSION}
        assert run("db", "upgrade", "--kamailio-tables").stdout == "schema up to date\n"
        k.start()
        try:
            ua = SipUA(k.address)
            r, d = ua.subscribe("sip:bob@127.0.0.1")
            assert r.status == 200
            ua.close()
        finally:
            k.cleanup()
    finally:
        db.drop()


@pytest.mark.skipif(not shutil.which("pa-admin", path=os.path.dirname(sys.executable)),
                    reason="the package is not installed here (tox installs it)")
def test_the_installed_command_upgrades_a_database(tmp_path):
    """pip's pa-admin, away from the checkout: the schema files come with it."""
    db = ScratchDatabase(schema=False)
    config = tmp_path / "pa.yaml"
    config.write_text(yaml.safe_dump({"db_url": db.url()}))
    try:
        command = shutil.which("pa-admin", path=os.path.dirname(sys.executable))
        r = subprocess.run([command, "--config", str(config), "db", "upgrade"],
                           capture_output=True, text=True, cwd="/", timeout=30,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:-1] == applied_schema_files()
    finally:
        db.drop()


# -- the other event packages --------------------------------------------------

DIALOG_BODY = ('<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0"'
               ' state="full" entity="{}"><dialog id="d1"><state>early</state></dialog>'
               '</dialog-info>')


def test_show_watchers_and_counts_cover_every_package(kamailio, ua, presentity):
    r = ua.request("PUBLISH", presentity, [("Event", "dialog"),
                                           ("Content-Type", "application/dialog-info+xml")],
                   DIALOG_BODY.format(presentity).encode())
    assert r.status == 200
    r = ua.request("PUBLISH", presentity, [("Event", "message-summary"),
                                           ("Content-Type", "application/simple-message-summary")],
                   b"Messages-Waiting: yes\r\n")
    assert r.status == 200
    r, d = ua.subscribe(presentity, event="dialog")
    assert r.status == 200
    shown = admin_json(kamailio, "show", presentity)
    assert sorted(p["event"] for p in shown["publications"]) == ["dialog", "message-summary"]
    assert '"d1"' in shown["documents"]["dialog"]["document"]
    assert shown["documents"]["message-summary"]["document"] == "Messages-Waiting: yes\r\n"
    text = admin(kamailio, "show", presentity).stdout
    assert "dialog document (version 1):" in text
    assert "presence document (version 0):" in text
    [row] = admin_json(kamailio, "watchers", presentity)["subscriptions"]
    assert (row["event"], row["status"]) == ("dialog", "active")
    counts = admin_json(kamailio, "counts")
    assert counts["subscriptions dialog active"] >= 1
    assert counts["dialog publications"] >= 1 and counts["message-summary publications"] >= 1


def test_dialog_watchers_wait_for_a_decision_of_their_own(kamailio, database, presentity):
    """auth implicit: dialog follows the presentity's decisions, kept per
    package; approving presence does not approve dialog."""
    ua = user_agent(kamailio, database, "w" + rand(6))
    try:
        r, d = ua.subscribe(presentity, event="dialog")
        assert r.status == 200
        assert ua.wait_notify(d.call_id).subscription_state()[0] == "pending"
        admin(kamailio, "approve", presentity, ua.aor)
        assert ua.quiet(d.call_id, 1.5) == []
        admin(kamailio, "approve", presentity, ua.aor, "--event", "dialog")
        n = ua.wait_notify(d.call_id, 2)
        assert n.subscription_state()[0] == "active"
        assert b"<dialog-info" in n.body
        decisions = admin_json(kamailio, "watchers", presentity)["decisions"]
        assert sorted(x["event"] for x in decisions) == ["dialog", "presence"]
    finally:
        ua.close()
