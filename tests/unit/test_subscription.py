from pa_handlers.subscription import (Subscription, build_notify, route_target,
                                      subscription_state)


def _sub(route_set="", event_id=""):
    return Subscription(
        presence_domain="registrar", event="presence", event_id=event_id, presentity="bob@example.com",
        watcher="alice@example.com", watcher_display="Alice", call_id="c1", local_tag="lt",
        remote_tag="rt", local_uri="<sip:bob@example.com>", remote_uri='"Alice" <sip:alice@example.com>',
        remote_target="sip:alice@10.0.0.1:5062", route_set=route_set,
        local_contact="sip:10.0.0.9:5060;transport=udp", socket="udp:10.0.0.9:5060", received="",
        remote_cseq=1, local_cseq=1, content_type="application/pidf+xml", status="active",
        reason="", permissions=7, expires_at=0)


def test_no_route_set_goes_to_the_remote_target():
    assert route_target(_sub()) == ("sip:alice@10.0.0.1:5062", "", [])


def test_loose_routing_uses_first_route_as_next_hop():
    ruri, nexthop, routes = route_target(_sub("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"))
    assert ruri == "sip:alice@10.0.0.1:5062"
    assert nexthop == "sip:p1.example.com;lr"
    assert routes == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_strict_routing_puts_the_route_in_the_request_uri():
    ruri, nexthop, routes = route_target(_sub("<sip:strict.example.com>, <sip:p2.example.com;lr>"))
    assert (ruri, nexthop) == ("sip:strict.example.com", "")
    assert routes == ["<sip:p2.example.com;lr>", "<sip:alice@10.0.0.1:5062>"]


def test_notify_carries_the_dialog_and_state():
    n = build_notify(_sub("<sip:p1.example.com;lr>", event_id="x1"), 5,
                     subscription_state("active", 300), "application/pidf+xml", "<presence/>")
    lines = n.headers.split("\r\n")
    assert "From: <sip:bob@example.com>;tag=lt" in lines
    assert 'To: "Alice" <sip:alice@example.com>;tag=rt' in lines
    assert "Call-ID: c1" in lines
    assert "CSeq: 5 NOTIFY" in lines
    assert "Route: <sip:p1.example.com;lr>" in lines
    assert "Event: presence;id=x1" in lines
    assert "Subscription-State: active;expires=300" in lines
    assert "Content-Type: application/pidf+xml" in lines
    assert "Contact: <sip:10.0.0.9:5060;transport=udp>" in lines
    assert (n.socket, n.body, n.cseq) == ("udp:10.0.0.9:5060", "<presence/>", 5)


def test_bodyless_notify_has_no_content_type():
    n = build_notify(_sub(), 2, subscription_state("pending", 10))
    assert "Content-Type" not in n.headers
    assert "Subscription-State: pending;expires=10" in n.headers


def test_terminated_state_has_a_reason():
    assert subscription_state("terminated", 0, "timeout") == "terminated;reason=timeout"
    assert subscription_state("active", -3) == "active;expires=0"
