"""Who is who, through Kamailio (kamailio.cfg.sample) and pa-admin: digest
credentials of another user get 403, not a new challenge; operators
create SIP and XCAP users with pa-admin; every publication records who
published it; and the addresses operators type follow the same URI
grammar as SIP's."""

import json
import os
import socket
import subprocess

import pytest
import yaml

from conftest import settings
from harness import ROOT, Kamailio, ScratchDatabase
from helpers import pidf_body, xcap
from sipua import SipUA, rand

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def kamailio(database):
    """auth: implicit, the default bin/pa-run writes."""
    k = Kamailio(settings(database, auth="implicit")).start()
    yield k
    k.cleanup()


@pytest.fixture(scope="module")
def open_kamailio(database):
    """auth: none: nobody authenticates."""
    k = Kamailio(settings(database, auth="none")).start()
    yield k
    k.cleanup()


def admin(config, *args, password=None, check=True):
    """pa-admin as an operator runs it; `password` on its standard input."""
    result = subprocess.run([os.path.join(ROOT, "bin", "pa-admin"), "--config", config, *args],
                            capture_output=True, text=True, timeout=30,
                            input="" if password is None else password + "\n")
    if check:
        assert result.returncode == 0, result.stderr
    return result


def user(kamailio, name=None):
    """A user created with pa-admin user add, and its UA."""
    name = name or "u" + rand(8)
    admin(kamailio.config_path, "user", "add", f"{name}@127.0.0.1", password=PASSWORD)
    ua = SipUA(kamailio.address, user=name)
    ua.credentials = (name, PASSWORD)
    return ua


def publish(ua, presentity, note="here", headers=()):
    return ua.request("PUBLISH", presentity, [("Event", "presence"),
                                              ("Content-Type", "application/pidf+xml"),
                                              *headers],
                      pidf_body(presentity, "t", "open", note=note))


@pytest.fixture
def alice(kamailio):
    ua = user(kamailio)
    yield ua
    ua.close()


@pytest.fixture
def bob(kamailio):
    ua = user(kamailio)
    yield ua
    ua.close()


# -- credentials of another user: 403 (RFC 3903 6, the README) ----------------

def test_publish_for_another_presentity_with_valid_credentials_gets_403(kamailio, alice, bob):
    """alice authenticates correctly but publishes bob's state: a new
    challenge would only make her client loop."""
    r = publish(alice, bob.aor)
    assert r.status == 403, r.start
    # Also when she claims to be bob in From.
    own, alice.aor = alice.aor, bob.aor
    assert publish(alice, bob.aor).status == 403
    alice.aor = own
    assert "publisher is " + alice.aor[4:] in kamailio.log()
    assert publish(bob, bob.aor).status == 200


def test_subscribe_in_another_watchers_name_gets_403(kamailio, alice, bob):
    alice.aor = bob.aor  # From: bob, credentials: alice's
    r, _ = alice.subscribe(f"sip:p{rand(6)}@127.0.0.1")
    assert r.status == 403, r.start


def test_register_for_another_user_gets_403(kamailio, alice, bob):
    r = alice.register(bob.aor)
    assert r.status == 403, r.start
    assert bob.register().status == 200


def test_a_from_domain_that_is_not_utf8_gets_400_before_authentication(kamailio):
    mark = len(kamailio.log())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        s.sendto(b"SUBSCRIBE sip:bob@127.0.0.1 SIP/2.0\r\n"
                 b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
                 % (s.getsockname()[1], rand().encode())
                 + b"Max-Forwards: 70\r\nFrom: <sip:alice@ex\xffample.org>;tag=1\r\n"
                   b"To: <sip:bob@127.0.0.1>\r\nCall-ID: " + rand().encode()
                 + b"\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n",
                 kamailio.address)
        assert s.recv(65535).startswith(b"SIP/2.0 400")
    log = kamailio.log()[mark:]
    # (Kamailio's own parser logs its complaint about the URI.)
    assert "Traceback" not in log and log.count(" pa: ") <= 1, log


# -- users created with pa-admin ----------------------------------------------

def test_pa_admin_creates_sip_and_xcap_users(kamailio, database):
    name = "u" + rand(8)
    created = admin(kamailio.config_path, "user", "add", f"sip:{name}@127.0.0.1",
                    password=PASSWORD)
    assert created.stdout == f"{name}@127.0.0.1 created\n"
    # Only the digest secret is kept, never the password.
    [(stored_password, ha1)] = database.query(
        "SELECT password, ha1 FROM subscriber WHERE username = %s", (name,))
    assert stored_password == "" and len(ha1) == 32 and PASSWORD not in ha1
    ua = SipUA(kamailio.address, user=name)
    ua.credentials = (name, PASSWORD)
    try:
        presentity = ua.aor
        assert publish(ua, presentity).status == 200
        r, d = ua.subscribe(presentity)
        assert r.status == 200
        assert ua.wait_notify(d.call_id).subscription_state()[0] == "active"
        status, _, _ = xcap(f"http://127.0.0.1:{kamailio.port}", "GET",
                            f"/xcap-root/pres-rules/users/{presentity}/index",
                            user=name, password=PASSWORD)
        assert status == 404  # authenticated; no document yet
        assert f"{name}@127.0.0.1" in admin(kamailio.config_path, "user", "list", name).stdout
        # A new password replaces the old one.
        assert admin(kamailio.config_path, "user", "add", f"{name}@127.0.0.1",
                     password="n3w").stdout == f"{name}@127.0.0.1 has a new password\n"
        assert publish(ua, presentity).status == 407
        admin(kamailio.config_path, "user", "remove", f"{name}@127.0.0.1")
        ua.credentials = (name, "n3w")
        assert publish(ua, presentity).status == 407
    finally:
        ua.close()


@pytest.mark.parametrize("args, password, message", [
    (("user", "add", "alice@127.0.0.1"), "", "no password given"),
    (("user", "add", "sip:al ice@127.0.0.1"), PASSWORD, "not a SIP URI"),
    (("user", "add", f"{'a' * 65}@127.0.0.1"), PASSWORD, "at most 64 characters"),
    (("user", "remove", "nobody-at-all@127.0.0.1"), None, "no user nobody-at-all@127.0.0.1"),
])
def test_pa_admin_user_errors_are_one_line(kamailio, args, password, message):
    r = admin(kamailio.config_path, *args, password=password, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("pa-admin: ") and message in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_pa_admin_user_without_a_subscriber_table(tmp_path):
    db = ScratchDatabase(schema=False)
    config = tmp_path / "pa.yaml"
    config.write_text(yaml.safe_dump({"db_url": db.url()}))
    try:
        admin(str(config), "db", "upgrade")
        r = admin(str(config), "user", "add", "a@b", password=PASSWORD, check=False)
        assert r.returncode == 2
        assert "--kamailio-tables" in r.stderr and "Traceback" not in r.stderr
    finally:
        db.drop()


# -- who published ----------------------------------------------------------------

def shown_publishers(config, presentity):
    shown = json.loads(admin(config, "--json", "show", presentity).stdout)
    return [p["publisher"] for p in shown["publications"]]


def test_the_authenticated_publisher_is_recorded_and_shown(kamailio, bob):
    assert publish(bob, bob.aor).status == 200
    assert shown_publishers(kamailio.config_path, bob.aor) == [bob.aor[4:]]
    assert bob.aor[4:] in admin(kamailio.config_path, "show", bob.aor).stdout.splitlines()[1]


def test_without_authentication_the_from_address_is_recorded_and_shown(open_kamailio):
    presentity = f"sip:p{rand(8)}@127.0.0.1"
    ua = SipUA(open_kamailio.address, user="claims-" + rand(4))
    try:
        r = publish(ua, presentity)
        assert r.status == 200
    finally:
        ua.close()
    assert shown_publishers(open_kamailio.config_path, presentity) == [ua.aor[4:]]
    row = admin(open_kamailio.config_path, "show", presentity).stdout.splitlines()[1]
    assert ua.aor[4:] in row
    assert f"publisher={ua.aor[4:]}" in open_kamailio.log()


# -- the addresses operators type ----------------------------------------------------

@pytest.mark.parametrize("args", [
    ("watchers", "sip:al ice@example.org"), ("show", "bob@@example.org"),
    ("watchers", "sip:<bob>@example.org"), ("show", "sip:bob%00@example.org"),
    ("approve", "sip:bob@example.org", "sip:al ice@example.org"),
    ("reject", "bob@@example.org", "alice@example.org"),
    ("remove", "sip:bob@example.org", "sip:<alice>@example.org"),
    ("show", "sip:bob\x1b[2J@example.org"),
])
def test_a_bad_address_is_one_line_on_stderr_and_exit_2(open_kamailio, args):
    r = admin(open_kamailio.config_path, *args, check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("pa-admin: not a SIP URI") and len(r.stderr.splitlines()) == 1
    assert "\x1b" not in r.stderr and "\x00" not in r.stderr


def test_pa_admin_output_escapes_control_characters(open_kamailio, database):
    """State stored before addresses were checked (or by hand) is shown
    escaped, never sent raw to the operator's terminal."""
    presentity = f"p{rand(8)}@127.0.0.1"
    database.query("INSERT INTO pa_publication (presence_domain, event, presentity, etag,"
                   " source, publisher, content_type, parts, expires_at, updated_at)"
                   " VALUES ('registrar', 'presence', %s, %s, 'x', %s, 'application/pidf+xml',"
                   " '{}', UNIX_TIMESTAMP() + 600, UNIX_TIMESTAMP())",
                   (presentity, rand(12), "evil\x1b[2J\r\n@127.0.0.1"))
    out = admin(open_kamailio.config_path, "show", presentity).stdout
    assert "evil\\x1b[2J\\x0d\\x0a@127.0.0.1" in out
    assert "\x1b" not in out and "\r" not in out
