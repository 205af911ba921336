"""What a baresip user sees (Debian's baresip-core, presence and ctrl_tcp
modules, installed by bin/pa-install) against kamailio.cfg.sample, over
UDP and TCP.  baresip reads the first <basic> of a document only, and
publishes 3 ms after its REGISTER's 200: before, whether its registration
or its publication came first in the document was a race."""

import pytest

from phones import Baresip
from sipua import rand


@pytest.fixture(params=["udp", "tcp"])
def transport(request):
    return request.param


@pytest.fixture
def phones(kamailio, transport):
    made = []

    def make(user, watch=()):
        made.append(Baresip(user, kamailio.port, transport, watch))
        return made[-1]
    yield make
    for phone in made:
        phone.close()


def test_a_baresip_user_online_offline_and_quit(phones):
    bob, carol = f"bob{rand(6)}", f"carol{rand(6)}"
    uri = f"sip:{bob}@127.0.0.1"
    watcher = phones(carol, watch=[uri])
    assert watcher.registered()
    assert watcher.shows(uri, "Offline") == "Offline"

    # Registers, then publishes open at once (on its REGISTER's 200).
    publisher = phones(bob)
    assert publisher.registered()
    assert watcher.shows(uri, "Online") == "Online"

    # Offline while registered: its own publication speaks, not its binding.
    publisher.status(online=False)
    assert watcher.shows(uri, "Offline") == "Offline"
    publisher.status(online=True)
    assert watcher.shows(uri, "Online") == "Online"

    publisher.quit()
    assert watcher.shows(uri, "Offline") == "Offline"
