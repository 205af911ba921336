import dataclasses

import pytest

from pa_handlers import transport
from pa_handlers.messages import Notify


def notify(ruri="sip:w@192.0.2.1:5060", nexthop="", body="x", socket="udp:198.51.100.1:5060"):
    return Notify(ruri=ruri, nexthop=nexthop, socket=socket,
                  headers="From: <sip:p@h>;tag=1\r\nTo: <sip:w@h>;tag=2\r\n", body=body,
                  dialog=("c", "1", "2"), cseq=2)


def test_a_notify_that_fits_goes_as_it_is_at_the_limit():
    n = notify()
    assert transport.fit(n, transport.size(n)) is n


def test_too_large_for_udp_goes_over_tcp_when_the_target_names_no_transport():
    n = notify(ruri="sip:w@192.0.2.1:5060;ob")
    moved = transport.fit(n, transport.size(n) - 1)
    assert moved == dataclasses.replace(n, nexthop="sip:w@192.0.2.1:5060;ob;transport=tcp",
                                        socket="tcp:198.51.100.1:5060")


def test_the_first_route_is_moved_to_tcp_not_the_request_uri():
    n = notify(nexthop="sip:proxy.example.com;lr?X=1")
    moved = transport.fit(n, 100)
    assert (moved.ruri, moved.nexthop) == (n.ruri, "sip:proxy.example.com;lr;transport=tcp?X=1")


@pytest.mark.parametrize("ruri", ["sip:w@192.0.2.1;transport=TCP", "sips:w@192.0.2.1",
                                  "sip:w@192.0.2.1;transport=ws"])
def test_stream_targets_are_left_alone(ruri):
    n = notify(ruri=ruri)
    assert transport.fit(n, 100) is n


def test_a_target_that_takes_only_udp_gets_nothing_and_the_log_says_so(caplog):
    n = notify(ruri="sip:w@192.0.2.1;transport=udp", body="x" * 70000)
    assert transport.fit(n, 65507) is None
    assert "not sent" in caplog.text and "the subscription stays" in caplog.text
