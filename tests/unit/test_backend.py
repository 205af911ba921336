"""Back-end subscriptions: the pure parts (reasons, answers, the SUBSCRIBE
we send, backoff) with a store that only records (the SQL is exercised
by tests/integration/test_rls_backend.py against MariaDB)."""

import pytest

from pa_handlers.backend import BackEndSubscriptions, failure_reason, parse_response
from pa_handlers.config import settings_from_mapping
from pa_handlers.records import ESTABLISHED, IDLE, SENT, BackEndSubscription
from pa_handlers.sip import BadRequest

URL = "mysql://pa:secret@db/presence"


class Clock:
    def now(self):
        return 1000


class Recorder:
    """Stands in for store.backend: remembers what the core asked."""

    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    def claim_due(self, now, lease_until, limit):
        return self.rows

    def unneeded_due(self):
        self.calls.append(("unneeded",))

    def sending(self, sub, answer_by):
        self.calls.append(("sending", sub.call_id, sub.cseq, answer_by))

    def remove(self, sub_id):
        self.calls.append(("remove", sub_id))

    def failed(self, sub_id, call_id, retry_at, reason, code, cseq=None):
        self.calls.append(("failed", retry_at, reason, code))
        return self.rows[0]

    def feed(self, sub, state, reason, content_type, body, keep_body=False):
        self.calls.append(("feed", state, reason))
        return [7]


def row(phase=IDLE, needed=True, failures=0, remote_tag=""):
    return BackEndSubscription(
        1, "sip:carol@b.example", "presence", "alice@a.example", "cid", "ltag", remote_tag,
        "sip:10.0.0.2:5060" if remote_tag else "", "", "sip:10.0.0.1:5060", 3, phase, 0, 0,
        failures, "", "", needed=needed, socket="udp:10.0.0.1:5060")


def core(rows, **settings):
    s = settings_from_mapping({"db_url": URL, "local_domains": ["a.example"],
                               "backend_routes": {"b.example": "10.0.0.2:5070"},
                               "backend_retry_min": 5, "backend_retry_max": 40, **settings})
    store = Recorder(rows)
    return BackEndSubscriptions(s, store, Clock()), store


def test_off_without_local_domains():
    s = settings_from_mapping({"db_url": URL})
    assert BackEndSubscriptions(s, Recorder([row()]), Clock()).due() == ([], [])


def test_initial_subscribe_carries_the_subscribers_identity_and_the_route():
    backend, store = core([row()])
    (request,), changed = backend.due()
    assert changed == []
    assert (request.method, request.ruri, request.nexthop) == \
        ("SUBSCRIBE", "sip:carol@b.example", "sip:10.0.0.2:5070")
    headers = request.headers.split("\r\n")
    assert headers[0].startswith("From: <sip:alice@a.example>;tag=")
    assert "To: <sip:carol@b.example>" in headers and "CSeq: 1 SUBSCRIBE" in headers
    assert "Contact: <sip:10.0.0.1:5060>" in headers and "Expires: 3600" in headers
    # A new dialog for every initial SUBSCRIBE; in flight until the timeout.
    assert store.calls[0][0] == "sending" and store.calls[0][1] != "cid" and \
        store.calls[0][3] == 1010


def test_refresh_stays_in_the_dialog_and_unneeded_ends_with_expires_0():
    backend, store = core([row(ESTABLISHED, remote_tag="rt")])
    (request,), _ = backend.due()
    assert request.ruri == "sip:10.0.0.2:5060" and request.nexthop == ""
    assert "To: <sip:carol@b.example>;tag=rt" in request.headers
    assert "CSeq: 4 SUBSCRIBE" in request.headers
    backend, store = core([row(ESTABLISHED, needed=False, remote_tag="rt")])
    (request,), _ = backend.due()
    assert "Expires: 0" in request.headers and store.calls == [("remove", 1)]


@pytest.mark.parametrize("failures, wait", [(0, 0), (1, 10), (2, 20), (5, 40)])
def test_a_timeout_terminates_the_member_and_backs_off(failures, wait):
    backend, store = core([row(SENT, failures=failures)])
    requests, changed = backend.due()
    assert requests == [] and changed == [7]
    assert store.calls == [("failed", 1000 + wait, "timeout", 408),
                           ("feed", "terminated", "timeout")]


@pytest.mark.parametrize("code, reason", [(403, "rejected"), (603, "rejected"),
                                          (404, "noresource"), (489, "noresource"),
                                          (408, "timeout"), (481, "probation"),
                                          (500, "probation"), (503, "probation")])
def test_error_answers_become_subscription_state_reasons(code, reason):
    assert failure_reason(code) == reason


def test_responses_are_parsed_and_garbage_refused():
    code, resp = parse_response(b"SIP/2.0 202 Accepted\r\nCSeq: 1 SUBSCRIBE\r\n"
                                b"Expires: 30\r\n\r\n")
    assert code == 202 and resp.header("expires") == "30"
    with pytest.raises(BadRequest):
        parse_response(b"HTTP/1.1 200 OK\r\n\r\n")


def _notify(state, content_type="", body=b"", to_tag="ltag"):
    from pa_handlers.sip import parse_request
    head = ("NOTIFY sip:10.0.0.1:5060 SIP/2.0\r\nFrom: <sip:carol@b.example>;tag=rt\r\n"
            f"To: <sip:alice@a.example>;tag={to_tag}\r\nCall-ID: cid\r\nCSeq: 1 NOTIFY\r\n"
            f"Event: presence\r\nSubscription-State: {state}\r\n"
            + (f"Content-Type: {content_type}\r\n" if content_type else "")
            + f"Content-Length: {len(body)}\r\n\r\n")
    return parse_request(head.encode() + body)


@pytest.mark.parametrize("state, content_type, body, code, fed", [
    ("active;expires=60", "application/pidf+xml", b"<presence/>", 200, ("feed", "active", "")),
    ("pending", "", b"", 200, ("feed", "pending", "")),
    ("active;expires=60", "text/html", b"<b>hi</b>", 415, None),
    ("active;expires=60", "application/pidf+xml", b"x" * 50000, 413, None),
    ("terminated;reason=rejected", "", b"", 200, ("feed", "terminated", "rejected")),
])
def test_notifies_of_our_dialogs_feed_the_member(state, content_type, body, code, fed):
    backend, store = core([row(ESTABLISHED, remote_tag="rt")])
    store.of_dialog = lambda call_id, tag: store.rows[0] if (call_id, tag) == ("cid", "ltag") \
        else None
    outcome, _ = backend.notify(_notify(state, content_type, body))
    assert outcome.reply.code == code
    assert ([c for c in store.calls if c[0] == "feed"] or [None])[0] == fed


def test_notify_of_another_dialog_gets_481():
    backend, store = core([row(ESTABLISHED, remote_tag="rt")])
    store.of_dialog = lambda call_id, tag: None
    outcome, changed = backend.notify(_notify("active", to_tag="other"))
    assert outcome.reply.code == 481 and changed == [] and store.calls == []


def test_upstream_retry_after_wins_over_the_backoff():
    backend, store = core([row(ESTABLISHED, remote_tag="rt")])
    store.of_dialog = lambda call_id, tag: store.rows[0]
    backend.notify(_notify("terminated;reason=probation;retry-after=30"))
    assert ("failed", 1030, "probation", 0) in store.calls
    backend, store = core([row(SENT)])
    store.of_dialog = lambda call_id, tag: store.rows[0]
    backend.answered(b"SIP/2.0 503 Busy\r\nFrom: <sip:alice@a.example>;tag=ltag\r\n"
                     b"To: <sip:carol@b.example>;tag=x\r\nCall-ID: cid\r\nCSeq: 3 SUBSCRIBE\r\n"
                     b"Retry-After: 17\r\n\r\n")
    assert store.calls[0] == ("failed", 1017, "probation", 503)
