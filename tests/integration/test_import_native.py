"""pa-admin import-native against real Kamailio and MariaDB: Kamailio's own
presence module (bench/native.cfg) serves a presentity, its watcher and
its watcher list; it stops; the import carries its state into our tables;
ours, started on the same address, continues the dialogs and the
publication as if nothing had happened."""

import contextlib
import io
import json
import re
import time
import types

import pytest

from conftest import settings
from harness import ROOT, Kamailio, ScratchDatabase, admin_connection, free_port
from helpers import PIDF_NS, pidf, pidf_body, tuples
from sipua import SipUA, rand

from pa_handlers import admin
from pa_handlers.config import settings_from_mapping
from pa_handlers.native_import import NativeImportError, import_native
from pa_handlers.store import Database, Store

PIDF = "application/pidf+xml"
NATIVE_CFG = f"{ROOT}/bench/native.cfg"
NATIVE_TABLES = "/usr/share/kamailio/mysql/presence-create.sql"

# bench/native.cfg with the module's state in the database at once:
# subscriptions in the database only (subs_db_mode 3), publications without
# the in-memory cache; NOTIFYs sent by the worker that handles the request
# (a notifier process would wait waitn_time); and no table locks, without
# which a PUBLISH in DB-only mode locks `presentity`, then fails to read
# `active_watchers` (MariaDB error 1100) and notifies nobody.
DB_ONLY = """
modparam("presence", "subs_db_mode", 3)
modparam("presence", "publ_cache", 0)
modparam("presence", "notifier_processes", 0)
modparam("presence", "db_table_lock_type", 0)
"""


def apply_native_tables(database) -> None:
    with open(NATIVE_TABLES) as f:
        statements = [s for s in f.read().split(";\n") if s.strip()]
    with admin_connection(database.name) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def native_cfg(directory) -> str:
    with open(NATIVE_CFG) as f:
        text = f.read()
    anchor = 'modparam("presence", "db_url", PA_DB_URL)\n'
    assert anchor in text
    path = directory / "native-db-only.cfg"
    path.write_text(text.replace(anchor, anchor + DB_ONLY))
    return str(path)


def publish(ua, presentity, body=b"", *, etag=None, expires=600):
    headers = [("Event", "presence"), ("Expires", str(expires))]
    if etag:
        headers.append(("SIP-If-Match", etag))
    if body:
        headers.append(("Content-Type", PIDF))
    return ua.request("PUBLISH", presentity, headers, body)


def run_admin(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = admin.main(list(argv))
    return status, out.getvalue()


def notes(body: bytes) -> list[str]:
    return [n.text for n in pidf(body).findall(f"{{{PIDF_NS}}}note")]


def winfo_version(body: bytes) -> int:
    return int(re.search(rb'<watcherinfo[^>]*\sversion="(\d+)"', body).group(1))


def wait_for_native_tables(database, etag: str, call_id: str, cseq: int,
                           timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stored = database.query("SELECT 1 FROM presentity WHERE etag = %s", (etag,))
        sent = database.query("SELECT local_cseq FROM active_watchers WHERE callid = %s",
                              (call_id,))
        # Native stores the CSeq before tm increments it for the NOTIFY.
        if stored and sent and sent[0][0] + 1 >= cseq:
            return
        assert time.monotonic() < deadline, "native never stored what it sent"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def switched(database, tmp_path_factory):
    """Native presence with a device that published (then modified its
    publication) and a watcher, stopped; the import; ours started on the
    same port, past the NOTIFY its first timer sends the watcher."""
    apply_native_tables(database)
    native = Kamailio(settings(database), cfg=native_cfg(tmp_path_factory.mktemp("native")))
    ours = Kamailio(settings(database), port=native.port)
    device = SipUA(native.address, user=f"dev{rand(6)}")
    watcher = SipUA(native.address, user=f"w{rand(6)}")
    s = types.SimpleNamespace(native=native, ours=ours, device=device, watcher=watcher,
                              presentity=f"sip:{device.user}@127.0.0.1")
    try:
        native.start()
        r = publish(device, s.presentity, pidf_body(s.presentity, "t1", "open", note="in the office"))
        assert r.status == 200
        etag = r.get("sip-etag")
        # The presentity watches its own watcher list; the watcher's
        # SUBSCRIBE came through a proxy that record-routed (the watcher
        # itself, so that in-dialog requests still reach it).
        r, s.winfo = device.subscribe(s.presentity, event="presence.winfo", expires=600)
        assert r.status == 200
        device.wait_notify(s.winfo.call_id)
        s.route = f"<sip:127.0.0.1:{watcher.port};lr>"
        r, s.dialog = watcher.subscribe(s.presentity, expires=600,
                                        headers=[("Record-Route", s.route)])
        assert r.status == 200
        watcher.wait_notify(s.dialog.call_id)
        # A modification: native's next NOTIFY, and a new entity-tag.
        r = publish(device, s.presentity, pidf_body(s.presentity, "t1", "open", note="at lunch"),
                    etag=etag)
        assert r.status == 200
        s.etag = r.get("sip-etag")
        watcher.wait_notify(s.dialog.call_id, 2)
        s.native_notifies = watcher.notifies(s.dialog.call_id)
        s.native_winfo = device.notifies(s.winfo.call_id)
        # Native may send a NOTIFY before its own database write of the
        # change is done: stop it only once its tables show what it sent.
        wait_for_native_tables(database, s.etag, s.dialog.call_id,
                               s.native_notifies[-1].cseq[0])
        native.stop()

        s.import_status, s.import_output = run_admin("--config", ours.config_path, "--json",
                                                     "import-native")
        ours.start()
        s.notify = watcher.wait_notify(s.dialog.call_id, len(s.native_notifies) + 1, timeout=10)
        yield s
    finally:
        device.close()
        watcher.close()
        ours.cleanup()
        native.cleanup()


def test_first_import_counts_the_native_state(switched):
    assert switched.import_status == 0
    assert json.loads(switched.import_output) == {
        "publications": 1, "subscriptions": 2, "decisions": 1, "skipped": 0,
        "already present": 0}


def test_watcher_gets_an_in_dialog_notify_with_the_imported_document(switched):
    n, d = switched.notify, switched.dialog
    last_native = switched.native_notifies[-1]
    assert n.call_id == d.call_id
    assert n.tag("from") == d.remote_tag == last_native.tag("from")
    assert n.tag("to") == d.local_tag
    assert n.cseq[0] > last_native.cseq[0]
    assert n.get("route") == switched.route
    assert n.subscription_state()[0] == "active"
    assert n.get("content-type") == PIDF
    assert tuples(n.body) == [("t1", "open")]
    assert notes(n.body) == ["at lunch"]


def test_refresh_subscribe_in_the_dialog_gets_200(switched):
    call_id = switched.dialog.call_id
    seen = switched.watcher.notifies(call_id)
    r = switched.watcher.resubscribe(switched.dialog, 600)
    assert r.status == 200
    n = switched.watcher.wait_notify(call_id, len(seen) + 1)
    assert n.cseq[0] > seen[-1].cseq[0]
    assert notes(n.body) == ["at lunch"]


def test_watcher_list_refresh_continues_the_versions(switched):
    """Our watcher-info version is the NOTIFY's CSeq minus one; it must
    still exceed the last version native sent."""
    r = switched.device.resubscribe(switched.winfo, 600)
    assert r.status == 200
    n = switched.device.wait_notify(switched.winfo.call_id, len(switched.native_winfo) + 1)
    last = switched.native_winfo[-1]
    assert n.cseq[0] > last.cseq[0]
    assert winfo_version(n.body) > winfo_version(last.body)
    assert f"sip:{switched.watcher.user}@127.0.0.1".encode() in n.body


def test_publish_refresh_with_the_native_entity_tag_gets_200(switched):
    r = publish(switched.device, switched.presentity, etag=switched.etag)
    assert r.status == 200
    assert r.get("sip-etag") and r.get("sip-etag") != switched.etag


def test_second_import_imports_nothing(switched, database, capsys):
    """Also after the refresh above gave the publication a new entity-tag."""
    assert admin.main(["--config", switched.ours.config_path, "--json", "import-native"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"publications": 0, "subscriptions": 0, "decisions": 0, "skipped": 0,
                      "already present": 4}
    assert database.query("SELECT COUNT(*) FROM pa_publication")[0][0] == 1


def test_import_after_native_in_its_default_write_back_mode(tmp_path):
    """bench/native.cfg as shipped: subscriptions live in shared memory and
    reach active_watchers when native stops; its CSeqs start at 2 there."""
    db = ScratchDatabase()
    native = ours = device = watcher = None
    try:
        apply_native_tables(db)
        native = Kamailio(settings(db), cfg=NATIVE_CFG).start()
        ours = Kamailio(settings(db), port=native.port)
        device, watcher = SipUA(native.address, user="carol"), SipUA(native.address, user="dave")
        presentity = "sip:carol@127.0.0.1"
        r = publish(device, presentity, pidf_body(presentity, "c", "open", note="here"))
        assert r.status == 200
        _, d = watcher.subscribe(presentity, expires=600)
        last = watcher.wait_notify(d.call_id)
        native.stop()
        assert db.query("SELECT COUNT(*) FROM active_watchers")[0][0] == 1

        assert run_admin("--config", ours.config_path, "import-native")[0] == 0
        ours.start()
        n = watcher.wait_notify(d.call_id, 2, timeout=10)
        assert n.cseq[0] > last.cseq[0]
        assert (n.tag("from"), n.tag("to")) == (last.tag("from"), last.tag("to"))
        assert notes(n.body) == ["here"]
        assert watcher.resubscribe(d, 600).status == 200
        assert publish(device, presentity, etag=r.get("sip-etag")).status == 200
    finally:
        for ua in (device, watcher):
            if ua:
                ua.close()
        for k in (ours, native):
            if k:
                k.cleanup()
        db.drop()


# -- errors ---------------------------------------------------------------------

def test_unreachable_from_url_exits_2_with_a_clear_message(switched, capsys):
    url = f"mysql://nobody:secret@127.0.0.1:{free_port()}/presence"
    status = admin.main(["--config", switched.ours.config_path, "import-native",
                         "--from-url", url])
    err = capsys.readouterr().err
    assert status == 2
    assert "database unavailable: cannot connect to mysql://nobody:***@127.0.0.1" in err
    assert "secret" not in err


def test_malformed_from_url_exits_2(switched, capsys):
    status = admin.main(["--config", switched.ours.config_path, "import-native",
                         "--from-url", "postgres://x/y"])
    assert status == 2
    assert "--from-url is not a database URL" in capsys.readouterr().err


def test_database_without_native_tables_is_named(database):
    name = "pa_t_" + rand(10)
    with admin_connection() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"GRANT ALL ON `{name}`.* TO '{database.user}'@'127.0.0.1'")
    try:
        config = settings_from_mapping(settings(database))
        store = Store(Database(config.db_url, config.db_timeout))
        url = database.url().rsplit("/", 1)[0] + "/" + name
        with pytest.raises(NativeImportError,
                           match=r"has no table presentity, active_watchers, watchers"):
            import_native(store, config, url, "registrar", int(time.time()))
    finally:
        with admin_connection() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
