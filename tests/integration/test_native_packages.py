"""dialog and message-summary beside Kamailio's native presence_dialoginfo
and presence_mwi (Debian's kamailio-presence-modules, bench/native.cfg
with the two modules loaded): what native does on the same requests
(the differences the README lists), and pa-admin import-native carrying
native's dialog and message-summary publications and subscriptions over,
their versions continuing above native's."""

import re
import types

import pytest
from lxml import etree

from conftest import settings
from harness import Kamailio
from sipua import SipUA, rand
from test_import_native import (DB_ONLY, NATIVE_CFG, apply_native_tables, run_admin,
                                wait_for_native_tables)

DIALOG_INFO = "application/dialog-info+xml"
MWI = "application/simple-message-summary"
NS = "urn:ietf:params:xml:ns:dialog-info"
# bench/native.cfg loads presence_dialoginfo (the BLF benchmark's native).
MODULES = 'loadmodule "presence_mwi.so"\nloadmodule "presence_reginfo.so"\n'


def native_cfg(directory) -> str:
    with open(NATIVE_CFG) as f:
        text = f.read()
    anchor = 'modparam("presence", "db_url", PA_DB_URL)\n'
    anchor_module = 'loadmodule "presence_dialoginfo.so"\n'
    assert anchor_module in text
    text = text.replace(anchor_module, anchor_module + MODULES)
    path = directory / "native-packages.cfg"
    path.write_text(text.replace(anchor, anchor + DB_ONLY))
    return str(path)


def dialog_info(presentity, dialog_id, state):
    return (f'<?xml version="1.0"?><dialog-info xmlns="{NS}" version="0" state="full"'
            f' entity="{presentity}"><dialog id="{dialog_id}" direction="recipient">'
            f'<state>{state}</state></dialog></dialog-info>').encode()


def publish(ua, presentity, event, content_type, body, etag=None):
    headers = [("Event", event), ("Expires", "600"), ("Content-Type", content_type)]
    if etag:
        headers.append(("SIP-If-Match", etag))
    return ua.request("PUBLISH", presentity, headers, body)


def version(body):
    return int(etree.fromstring(body).get("version"))


@pytest.fixture(scope="module")
def native(database, tmp_path_factory):
    apply_native_tables(database)
    k = Kamailio(settings(database), cfg=native_cfg(tmp_path_factory.mktemp("native")))
    yield k
    k.cleanup()


@pytest.fixture
def native_ua(native):
    if not native.alive():
        native.start()
    u = SipUA(native.address, user=f"n{rand(6)}")
    yield u
    u.close()


def test_native_dialog_without_publication_sends_no_body(native_ua):
    """Ours: an empty full dialog-info (RFC 4235 4.1)."""
    r, d = native_ua.subscribe(f"sip:nobody{rand(5)}@127.0.0.1", event="dialog")
    assert r.status == 200
    n = native_ua.wait_notify(d.call_id)
    assert n.body == b""


def test_native_mwi_without_publication_sends_no_body(native_ua):
    """Ours: Messages-Waiting: no (RFC 3842 3.8 wants a summary)."""
    r, d = native_ua.subscribe(f"sip:nobody{rand(5)}@127.0.0.1", event="message-summary")
    assert r.status == 200
    n = native_ua.wait_notify(d.call_id)
    assert n.body == b""


def test_native_reg_is_only_what_was_published(native_ua):
    """Native presence_reginfo relays publications (pua_reginfo's): with
    none, the NOTIFY has no body, and anyone may watch.  Ours: the
    registrar's bindings, the AOR in state init, the AOR itself only."""
    r, d = native_ua.subscribe(f"sip:nobody{rand(5)}@127.0.0.1", event="reg")
    assert r.status == 200
    n = native_ua.wait_notify(d.call_id)
    assert n.body == b""


def test_native_dialog_versions_and_terminated_dialogs(native_ua):
    """Native: always state full; terminated dialogs stay until their
    publication expires.  Ours drops them after one NOTIFY."""
    presentity = f"sip:b{rand(6)}@127.0.0.1"
    r = publish(native_ua, presentity, "dialog", DIALOG_INFO,
                dialog_info(presentity, "x1", "confirmed"))
    assert r.status == 200
    _, d = native_ua.subscribe(presentity, event="dialog")
    first = native_ua.wait_notify(d.call_id)
    root = etree.fromstring(first.body)
    assert root.get("state") == "full"
    native_versions = [version(first.body)]
    assert publish(native_ua, presentity, "dialog", DIALOG_INFO,
                   dialog_info(presentity, "x1", "terminated"),
                   etag=r.get("sip-etag")).status == 200
    second = native_ua.wait_notify(d.call_id, 2)
    assert b"terminated" in second.body
    native_versions.append(version(second.body))
    # Native's first NOTIFY says version 1 (RFC 4235 4.1: 0); ours counts from 0.
    assert native_versions == [1, 2]


def test_native_mwi_refuses_a_bare_lf_body_with_500(native_ua):
    """Ours accepts LF line ends and answers garbage with 400."""
    presentity = f"sip:m{rand(6)}@127.0.0.1"
    r = publish(native_ua, presentity, "message-summary", MWI, b"Messages-Waiting: yes\n")
    assert r.status == 500
    r = publish(native_ua, presentity, "message-summary", MWI, b"garbage\r\n")
    assert r.status == 500


def test_import_native_carries_dialog_and_mwi_over(database, native, tmp_path):
    if not native.alive():
        native.start()
    device = SipUA(native.address, user=f"d{rand(6)}")
    watcher = SipUA(native.address, user=f"w{rand(6)}")
    presentity = f"sip:{device.user}@127.0.0.1"
    ours = Kamailio(settings(database), port=native.port)
    try:
        r = publish(device, presentity, "dialog", DIALOG_INFO,
                    dialog_info(presentity, "imp1", "early"))
        assert r.status == 200
        dialog_etag = r.get("sip-etag")
        r = publish(device, presentity, "message-summary", MWI,
                    b"Messages-Waiting: yes\r\nVoice-Message: 3/4\r\n")
        assert r.status == 200
        _, blf = watcher.subscribe(presentity, event="dialog", expires=600)
        native_blf = watcher.wait_notify(blf.call_id)
        _, mwi = watcher.subscribe(presentity, event="message-summary", expires=600)
        watcher.wait_notify(mwi.call_id)
        wait_for_native_tables(database, dialog_etag, blf.call_id, native_blf.cseq[0])
        native.stop()
        status, output = run_admin("--config", ours.config_path, "--json", "import-native")
        assert status == 0, output
        assert '"skipped": 0' in output
        ours.start()
        # The imported documents reach the imported subscriptions.
        n = watcher.wait_notify(blf.call_id, 2, timeout=10)
        assert n.cseq[0] > native_blf.cseq[0]
        assert [(d.get("id"), d.find(f"{{{NS}}}state").text)
                for d in etree.fromstring(n.body).findall(f"{{{NS}}}dialog")] == \
            [("imp1", "early")]
        assert version(n.body) > version(native_blf.body)
        m = watcher.wait_notify(mwi.call_id, 2, timeout=10)
        assert m.body == b"Messages-Waiting: yes\r\nVoice-Message: 3/4\r\n"
        # The device's entity-tag is ours now.
        r = device.request("PUBLISH", presentity, [("Event", "dialog"), ("Expires", "600"),
                                                  ("SIP-If-Match", dialog_etag)])
        assert r.status == 200
    finally:
        device.close()
        watcher.close()
        ours.cleanup()
