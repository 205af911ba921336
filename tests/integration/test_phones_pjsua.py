"""What a person sees on a real phone: pjsua2 (PyPI pjsua2-python, installed
by the test environment) as publisher and as watcher against
kamailio.cfg.sample, over UDP and over TCP.  Each check asserts what
pjsua2's buddy info shows (BuddyInfo.presStatus: status, note,
activity), as a user reads it on the watching phone.

pjsua reads the first tuple of a document only (status.info[0]), so these
tests fail whenever the first tuple is not the best answer."""

import pytest

from phones import Pjsua
from sipua import rand

TRANSPORTS = ["udp", "tcp"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture
def phones(kamailio, transport):
    """pjsua2 endpoints (each its own process) on `transport`."""
    made = []

    def make():
        made.append(Pjsua(transport, kamailio.port))
        return made[-1]
    yield make
    for phone in made:
        phone.close()


def shown(status, note="", activity="unknown"):
    return {"status": status, "note": note, "activity": activity}


def sees(watcher, uri, **expect):
    """What the watching phone shows of uri (waiting for `expect`)."""
    info = watcher.shows("w", uri, **expect)
    return {k: info[k] for k in ("status", "note", "activity")}


def test_a_publishing_user_from_register_to_quit(phones):
    alice, bob = f"alice{rand(6)}", f"bob{rand(6)}"
    uri = f"sip:{alice}@127.0.0.1"
    publisher, watcher = phones(), phones()
    assert watcher.account("w", bob) == 200
    watcher.watch("w", uri)
    assert sees(watcher, uri, status="offline") == shown("offline")

    assert publisher.account("a", alice) == 200
    assert sees(watcher, uri, status="online") == shown("online")

    publisher.status("a", "open", "at my desk")
    assert sees(watcher, uri, note="at my desk") == shown("online", "at my desk")

    publisher.status("a", "open", "in a meeting")
    assert sees(watcher, uri, note="in a meeting") == shown("online", "in a meeting")

    publisher.status("a", "open", "lunch", activity="away")
    assert sees(watcher, uri, activity="away") == shown("online", "lunch", "away")

    # Offline while still registered: the phone says so itself.
    publisher.status("a", "closed", "gone home")
    assert sees(watcher, uri, status="offline") == shown("offline", "gone home")

    publisher.status("a", "open", "back again")
    assert sees(watcher, uri, note="back again") == shown("online", "back again")

    # Quitting un-publishes and un-registers.
    publisher.quit()
    assert sees(watcher, uri, status="offline", note="") == shown("offline")


def test_a_user_who_only_registers(phones):
    carol, bob = f"carol{rand(6)}", f"bob{rand(6)}"
    uri = f"sip:{carol}@127.0.0.1"
    phone, watcher = phones(), phones()
    assert watcher.account("w", bob) == 200
    watcher.watch("w", uri)
    assert sees(watcher, uri, status="offline") == shown("offline")
    assert phone.account("c", carol, publish=False) == 200
    assert sees(watcher, uri, status="online") == shown("online")
    assert phone.unregister("c") == 200
    assert sees(watcher, uri, status="offline") == shown("offline")


def test_unsubscribe_ends_the_subscription(phones, database):
    dave, bob = f"dave{rand(6)}", f"bob{rand(6)}"
    uri = f"sip:{dave}@127.0.0.1"
    phone, watcher = phones(), phones()
    assert phone.account("d", dave) == 200
    assert watcher.account("w", bob) == 200
    watcher.watch("w", uri)
    assert sees(watcher, uri, status="online") == shown("online")
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s",
                          (f"{dave}@127.0.0.1",)) == [(1,)]
    watcher.unsubscribe("w", uri)
    # pjsua forgets the subscription once the final NOTIFY came.
    assert watcher.shows("w", uri, subState="NULL")["subState"] == "NULL"
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s",
                          (f"{dave}@127.0.0.1",)) == [(0,)]
    # Later changes reach nobody: the watcher keeps what it showed last.
    phone.status("d", "open", "still here")
    assert watcher.shows("w", uri, timeout=2)["note"] == ""
