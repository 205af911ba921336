"""What a Linphone user sees (Debian's linphone-cli, installed by
bin/pa-install) against kamailio.cfg.sample.  The sample's registrar hands
out GRUUs, and Linphone subscribes with its public GRUU as Contact: every
NOTIFY must be routed through the registrar's bindings (before: `failed to
resolve "example.org"`, and Linphone never heard a thing)."""

from helpers import pidf_body, wait_until
from phones import Linphone
from sipua import SipUA, rand

DOMAIN = "example.org"


def publish(ua, uri, basic, note):
    r = ua.request("PUBLISH", uri, [("Event", "presence"),
                                    ("Content-Type", "application/pidf+xml")],
                   pidf_body(uri, "t1", basic, note=note))
    assert r.status == 200


def test_a_linphone_watcher_with_a_gruu_sees_every_change(kamailio, database):
    blin, alice = f"blin{rand(6)}", f"alice{rand(6)}"
    uri = f"sip:{alice}@{DOMAIN}"
    publisher = SipUA(kamailio.address, user=alice)
    phone = Linphone(blin, DOMAIN, kamailio.port)
    try:
        assert phone.registered(), phone.log()
        publish(publisher, uri, "open", "at work")
        mark = len(phone.output)
        phone.watch("alice", uri)
        assert phone.shows("alice", "Online", mark), phone.log()
        [(target,)] = database.query("SELECT remote_target FROM pa_subscription"
                                     " WHERE presentity = %s", (uri[4:],))
        assert ";gr=urn:uuid:" in target    # its public GRUU, not its address

        mark = len(phone.output)
        publish(publisher, uri, "closed", "gone home")
        assert phone.shows("alice", "Offline", mark), phone.log()

        # Quitting, Linphone removes its publication: Expires: 0 and no
        # Content-Length over UDP (native presence answers 400).
        assert database.query("SELECT COUNT(*) FROM pa_publication WHERE presentity = %s"
                              " AND origin = 'publish'", (f"{blin}@{DOMAIN}",)) == [(1,)]
        phone.quit()
        wait_until(lambda: database.query(
            "SELECT COUNT(*) FROM pa_publication WHERE presentity = %s AND origin = 'publish'",
            (f"{blin}@{DOMAIN}",)) == [(0,)], timeout=15)
    finally:
        phone.close()
        publisher.close()
