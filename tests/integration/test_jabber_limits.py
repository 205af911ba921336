"""What XMPP allows, through a real XMPP server (Prosody), our gateway,
Kamailio and MariaDB: long resources, priorities out of range and
subscriptions to addresses no SIP user can have are stored or answered as
RFC 6121 / RFC 7622 say, and an XMPP user's resources are capped."""

import os
import subprocess

import pytest
import yaml

pytest.importorskip("slixmpp", reason="pip install slixmpp")

from harness import ROOT, ScratchDatabase, admin_connection  # noqa: E402
from helpers import PIDF_NS, pidf, wait_until  # noqa: E402
from pa_handlers.store import SCHEMA_VERSION  # noqa: E402
from sipua import SipUA  # noqa: E402
from test_jabber import COMPONENT, XMPP_DOMAIN, basic, last_notify  # noqa: E402
# The Prosody, Kamailio and gateway of test_jabber, new ones for this module.
from test_jabber import gateway, kamailio, loop, prosody  # noqa: E402,F401
from xmppclient import XmppUser  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

USERS = ("tybalt", "benvolio", "nurse", "paris")


@pytest.fixture(scope="module", autouse=True)
def accounts(prosody):
    """Users of these tests only, beside test_jabber's."""
    for user in USERS:
        prosody.register(user, "pw-" + user)


@pytest.fixture
def login(loop, prosody):
    made = []

    def login(name, resource="phone"):
        made.append(XmppUser(loop, f"{name}@{XMPP_DOMAIN}", "pw-" + name, prosody.c2s_port,
                             resource=resource).login())
        return made[-1]
    yield login
    for user in made:
        user.close()


@pytest.fixture
def watcher(kamailio):
    ua = SipUA(kamailio.address, user="montague")
    yield ua
    ua.close()


def watch(ua, name):
    r, d = ua.subscribe(f"sip:{name}@{XMPP_DOMAIN}")
    assert r.status == 200
    return d


def test_a_resource_of_800_utf8_bytes_is_stored_and_seen(gateway, login, watcher, database):
    resource = "\u00e9" * 400  # 400 characters, 800 bytes: XMPP allows 1023 bytes
    d = watch(watcher, "tybalt")
    login("tybalt", resource=resource)
    last_notify(watcher, d.call_id, lambda b: "open" in basic(b))
    assert database.query("SELECT resource FROM pa_xmpp_resource WHERE jid = %s",
                          (f"tybalt@{XMPP_DOMAIN}",)) == [(resource.encode(),)]


def test_a_priority_outside_xmpps_range_is_clamped(gateway, login, watcher):
    d = watch(watcher, "benvolio")
    user = login("benvolio")
    last_notify(watcher, d.call_id, lambda b: "open" in basic(b))
    user.send(ppriority=99999, pstatus="very important")
    notify = last_notify(watcher, d.call_id, lambda b: b"very important" in b)
    # 127, the highest XMPP priority, is PIDF priority 1.
    assert pidf(notify.body).find(f".//{{{PIDF_NS}}}contact").get("priority") == "1"
    user.send(ppriority=-99999, pstatus="not at all")
    notify = last_notify(watcher, d.call_id, lambda b: b"not at all" in b)
    assert "open" in basic(notify.body)


def test_a_subscription_to_a_user_no_sip_address_can_hold_is_answered(gateway, login):
    nurse = login("nurse")
    long_user = "x" * 1000
    nurse.send(pto=f"{long_user}@{COMPONENT}", ptype="subscribe")
    nurse.wait_for("an answer", lambda p: p["type"] == "unsubscribed"
                   and p["from"].user == long_user)
    # The gateway still answers the next one.
    nurse.send(pto=f"romeo@{COMPONENT}", ptype="subscribe")
    nurse.wait_for("romeo's answer", lambda p: p["from"].user == "romeo"
                   and p["type"] in ("subscribed", "unavailable"))


def test_an_xmpp_users_resources_are_capped(gateway, login, watcher, database):
    """xmpp_max_resources (10 by default): presence from an 11th resource
    is ignored, the first ten stay."""
    d = watch(watcher, "paris")
    for i in range(11):
        login("paris", resource=f"device{i:02d}")

    def stored():
        return database.query("SELECT COUNT(*) FROM pa_xmpp_resource WHERE jid = %s",
                              (f"paris@{XMPP_DOMAIN}",))[0][0]
    wait_until(lambda: stored() == 10, timeout=10)
    wait_until(lambda: "more than 10 resources" in gateway.log(), timeout=10)
    assert stored() == 10
    last_notify(watcher, d.call_id,
                lambda b: len(pidf(b).findall(f"{{{PIDF_NS}}}tuple")) == 10)


def test_db_upgrade_takes_a_version_1_database_to_xmpps_limits(tmp_path):
    """A database made before 002_xmpp_limits.sql keeps its resources and
    then stores what XMPP allows."""
    db = ScratchDatabase(schema=False)
    config = tmp_path / "pa.yaml"
    config.write_text(yaml.safe_dump({"db_url": db.url()}))
    try:
        with open(os.path.join(ROOT, "sql", "001_schema.sql")) as f:
            statements = [s for s in f.read().split(";\n") if s.strip()]
        with admin_connection(db.name) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        db.query("INSERT INTO pa_xmpp_resource (jid, resource, updated_at)"
                 " VALUES ('juliet@x', 'balcony', 0)")
        upgrade = subprocess.run([os.path.join(ROOT, "bin", "pa-admin"), "--config", str(config),
                                  "db", "upgrade"], capture_output=True, text=True, timeout=60)
        assert upgrade.returncode == 0, upgrade.stderr
        assert "applied 002_xmpp_limits.sql" in upgrade.stdout
        assert db.query("SELECT MAX(version) FROM pa_schema") == [(SCHEMA_VERSION,)]
        long_resource = ("\u00e9" * 511).encode()  # 1022 bytes
        db.query("INSERT INTO pa_xmpp_resource (jid, resource, updated_at)"
                 " VALUES ('juliet@x', %s, 0)", (long_resource,))
        assert sorted(r for (r,) in db.query("SELECT resource FROM pa_xmpp_resource")) == \
            sorted([b"balcony", long_resource])
    finally:
        db.drop()
