"""The documents of dialog (RFC 4235), message-summary (RFC 3842) and reg
(RFC 3680), and the registry's view of them, without Kamailio."""

import pytest
from lxml import etree

from pa_handlers import dialoginfo, message_summary, packages, partial_state, reginfo
from pa_handlers.config import ConfigError, settings_from_mapping
from pa_handlers.pidf import InvalidDocument
from pa_handlers.records import StoredPublication, Subscription

NS = dialoginfo.NS


def settings(**extra):
    return settings_from_mapping({"db_url": "mysql://u:p@h/d", **extra})


def sub(cseq=1, presentity="bob@example.com"):
    return Subscription("registrar", "dialog", "", presentity, "alice@example.com", "", "c",
                        "lt", "rt", "<sip:bob@example.com>", "<sip:alice@example.com>",
                        "sip:alice@192.0.2.1", "", "sip:pa@192.0.2.2", "udp:192.0.2.2:5060", "",
                        1, cseq, dialoginfo.DIALOG_INFO, "active", "", 7, 2**31)


def dialog_doc(*dialogs, root_attrs='version="0" state="full" entity="sip:bob@example.com"'):
    inner = "".join(f'<dialog id="{i}"><state>{s}</state></dialog>' for i, s in dialogs)
    return f'<dialog-info xmlns="{NS}" {root_attrs}>{inner}</dialog-info>'.encode()


def states(doc):
    return [(i[0], i[1][0]) for i in partial_state.State.loads(doc).items]


def pub(parts, updated_at=0):
    return StoredPublication("publish", "", parts, updated_at)


def test_dialogs_of_two_publishers_aggregate_by_id_the_later_winning():
    s = settings()
    a = dialoginfo.DIALOG_DOCUMENTS.parse(dialog_doc(("d1", "early"), ("d2", "Trying")), s)
    b = dialoginfo.DIALOG_DOCUMENTS.parse(dialog_doc(("d1", "confirmed")), s)
    doc = dialoginfo.DIALOG_DOCUMENTS.compose("bob@example.com", [pub(a), pub(b)], s, True)
    assert states(doc) == [("d2", "trying"), ("d1", "confirmed")]


def test_terminated_dialog_shown_once_then_dropped():
    s = settings()
    ended = dialoginfo.DIALOG_DOCUMENTS.parse(dialog_doc(("d1", "terminated")), s)
    first = dialoginfo.DIALOG_DOCUMENTS.compose("b@x", [pub(ended)], s, True, previous=b"")
    assert states(first) == [("d1", "terminated")]
    then = dialoginfo.DIALOG_DOCUMENTS.compose("b@x", [pub(ended)], s, True, previous=first)
    assert states(then) == []
    # Gone, as it ended, in the version it ended.
    assert partial_state.State.loads(then).gone == [["d1", partial_state.State.loads(
        first).items[0][1], 1]]


def test_render_counts_versions_per_subscription_and_is_empty_but_valid():
    root = etree.fromstring(dialoginfo.DIALOG_DOCUMENTS.render(None, sub(cseq=1)).encode())
    assert (root.get("version"), root.get("state"), root.get("entity"), len(root)) == \
        ("0", "full", "sip:bob@example.com", 0)
    s = settings()
    doc = dialoginfo.DIALOG_DOCUMENTS.compose(
        "bob@example.com", [pub(dialoginfo.DIALOG_DOCUMENTS.parse(dialog_doc(("x", "early")), s))],
        s, True)
    root = etree.fromstring(dialoginfo.DIALOG_DOCUMENTS.render(doc, sub(cseq=5)).encode())
    assert root.get("version") == "4"
    assert root.find(f"{{{NS}}}dialog/{{{NS}}}state").text == "early"


@pytest.mark.parametrize("body, code", [
    (dialog_doc(("d", "ringing")), 400),
    (dialog_doc(("", "early")), 400),
    (dialog_doc(root_attrs='version="-1" state="full" entity="sip:b@x"'), 400),
    (dialog_doc(root_attrs='version="1" state="all" entity="sip:b@x"'), 400),
    (dialog_doc(root_attrs='version="1" state="full"'), 400),
    (dialog_doc(*[(f"d{i}", "early") for i in range(33)]), 413),
    (b"<dialog-info", 400),
])
def test_bad_dialog_documents(body, code):
    with pytest.raises(InvalidDocument) as e:
        dialoginfo.DIALOG_DOCUMENTS.parse(body, settings())
    assert e.value.code == code


def test_dialogs_over_the_document_limit_are_refused_or_left_out():
    s = settings(max_document_bytes=4096)
    big = dialoginfo.DIALOG_DOCUMENTS.parse(dialog_doc(*[(f"d{i}-" + "x" * 150, "early")
                                                         for i in range(30)]), settings())
    with pytest.raises(dialoginfo.DialogDocuments.TooLarge):
        dialoginfo.DIALOG_DOCUMENTS.compose("b@x", [pub(big)], s, True)
    kept = dialoginfo.DIALOG_DOCUMENTS.compose("b@x", [pub(big)], s, False)
    assert 0 < len(states(kept)) < 30
    assert len(dialoginfo.DIALOG_DOCUMENTS.render(kept, sub())) <= 4096


@pytest.mark.parametrize("body, kept", [
    (b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/0)\r\n",
     "Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/0)\r\n"),
    (b"messages-waiting:no\n", "messages-waiting:no\r\n"),
    (b"Messages-Waiting: yes\r\nMessage-Account: sip:vm@x\r\n\r\nSubject: hi\r\n",
     "Messages-Waiting: yes\r\nMessage-Account: sip:vm@x\r\n"),
])
def test_summaries_kept_as_published(body, kept):
    assert message_summary.parse_summary(body, 4096) == kept


@pytest.mark.parametrize("body", [b"", b"yes\r\n", b"Messages-Waiting: yes\r\nVoice: 1/2\r\n",
                                  b"Messages-Waiting: yes\r\nVoice-Message: 4294967296/0\r\n"])
def test_bad_summaries_get_400(body):
    with pytest.raises(InvalidDocument) as e:
        message_summary.parse_summary(body, 4096)
    assert e.value.code == 400


def test_the_newest_summary_wins():
    older, newer = pub(b"Messages-Waiting: yes\r\n", 20), pub(b"Messages-Waiting: no\r\n", 10)
    docs = message_summary.MESSAGE_SUMMARY_DOCUMENTS
    assert docs.compose("b@x", [older, newer], settings(), True) == older.parts
    assert docs.render(None, sub()) == "Messages-Waiting: no\r\n"


def test_reginfo_of_contacts():
    c = reginfo.contact("c1", "sip:bob@192.0.2.4", reginfo.ACTIVE, reginfo.REGISTERED, 3600,
                        0.5, "call@x", 7, 2**31)
    doc = reginfo.REG_DOCUMENTS.compose("bob@example.com", [pub(c)], settings(), False)
    root = etree.fromstring(reginfo.REG_DOCUMENTS.render(doc, sub(cseq=3)).encode())
    assert (root.get("version"), root.get("state")) == ("2", "full")
    [reg] = root
    assert (reg.get("aor"), reg.get("state")) == ("sip:bob@example.com", "active")
    [contact] = reg
    assert (contact.get("state"), contact.get("event"), contact.get("expires"), contact.get("q"),
            contact.get("callid"), contact.get("cseq")) == \
        ("active", "registered", "3600", "0.5", "call@x", "7")
    gone = reginfo.ended(c, reginfo.EXPIRED)
    assert reginfo.ended(gone, reginfo.EXPIRED) is None
    root = etree.fromstring(reginfo.REG_DOCUMENTS.render(
        reginfo.REG_DOCUMENTS.compose("bob@example.com", [pub(gone)], settings(), False),
        sub()).encode())
    assert root[0].get("state") == "init" and root[0][0].get("event") == "expired"


def test_registration_events():
    old = reginfo.contact("c", "u", reginfo.ACTIVE, reginfo.REGISTERED, 60, None, "", 1, 1000)
    assert reginfo.event_of(None, 1000, None) == reginfo.REGISTERED
    assert reginfo.event_of(old, 1100, 1000) == reginfo.REFRESHED
    assert reginfo.event_of(old, 900, 1000) == reginfo.SHORTENED
    assert reginfo.event_of(reginfo.ended(old, reginfo.EXPIRED), 900, 1000) == reginfo.REGISTERED


def test_event_packages_setting():
    assert list(packages.enabled(settings())) == list(packages.PACKAGES)
    assert list(packages.enabled(settings(event_packages=["dialog"]))) == ["dialog"]
    assert list(packages.enabled(settings(event_packages=["presence"]))) == \
        ["presence", "presence.winfo"]
    with pytest.raises(ConfigError):
        packages.enabled(settings(event_packages=["conference"]))
    with pytest.raises(ConfigError):
        settings(event_packages=[])
    assert packages.allow_events(packages.publishable()) == \
        ("Allow-Events", "presence, dialog, message-summary")


def told(cseq, version):
    s = sub(cseq=cseq)
    s.told_version = version
    return s


def test_partial_dialog_state_since_the_acknowledged_version():
    s = settings()
    docs = dialoginfo.DIALOG_DOCUMENTS

    def publish(*dialogs, previous):
        return docs.compose("bob@example.com", [pub(docs.parse(dialog_doc(*dialogs), s))], s,
                            True, previous)
    v1 = publish(("a", "early"), ("b", "confirmed"), previous=b"")
    v2 = publish(("a", "confirmed"), ("b", "confirmed"), previous=v1)
    v3 = publish(("b", "confirmed"), previous=v2)
    assert publish(("b", "confirmed"), previous=v3) == v3      # no change, no new version

    def shown(doc, sub, partial=True):
        root = etree.fromstring(docs.render(doc, sub, partial).encode())
        return root.get("state"), [(d.get("id"), d.find(f"{{{NS}}}state").text) for d in root]
    # Acknowledged v1: a changed to confirmed (partial).
    assert shown(v2, told(3, 1)) == ("partial", [("a", "confirmed")])
    # Acknowledged v2: a is gone, shown terminated.
    assert shown(v3, told(4, 2)) == ("partial", [("a", "terminated")])
    # Acknowledged v1, coalesced: both steps at once.
    assert shown(v3, told(4, 1)) == ("partial", [("a", "terminated")])
    # Nothing acknowledged, already up to date, or a SUBSCRIBE's NOTIFY: full.
    assert shown(v3, told(4, 0)) == ("full", [("b", "confirmed")])
    assert shown(v3, told(4, 3)) == ("full", [("b", "confirmed")])
    assert shown(v3, told(4, 2), partial=False) == ("full", [("b", "confirmed")])


def test_departures_beyond_those_kept_mean_full_state():
    state = b""
    for n in range(partial_state.MAX_GONE + 3):
        state = partial_state.compose([(f"i{n}", n)], state, lambda i, c: (c, False))
    kept = partial_state.State.loads(state)
    assert len(kept.gone) == partial_state.MAX_GONE
    assert kept.delta(kept.horizon - 1) is None
    assert kept.delta(kept.horizon) is not None


def test_partial_reginfo():
    c1 = reginfo.contact("c1", "sip:a@192.0.2.1", reginfo.ACTIVE, reginfo.REGISTERED, 60,
                         None, "x", 1, 100)
    c2 = reginfo.contact("c2", "sip:a@192.0.2.2", reginfo.ACTIVE, reginfo.REGISTERED, 60,
                         None, "y", 1, 100)
    docs = reginfo.REG_DOCUMENTS
    v1 = docs.compose("a@x", [pub(c1)], settings(), False, b"")
    v2 = docs.compose("a@x", [pub(c1), pub(c2)], settings(), False, v1)
    root = etree.fromstring(docs.render(v2, told(3, 1), True).encode())
    assert root.get("state") == "partial"
    assert [c.get("id") for c in root[0]] == ["c2"] and root[0].get("state") == "active"
    root = etree.fromstring(docs.render(v2, told(3, 1)).encode())
    assert root.get("state") == "full" and len(root[0]) == 2


class Decided:
    """The decisions repository's one question, answered from a dict."""

    def __init__(self, decisions):
        self.decisions = decisions

    def of(self, domain, event, presentity, watcher):
        return self.decisions.get((event, watcher))

    def xcap_document(self, owner, auid):
        raise AssertionError("pres-rules are for presence only")


@pytest.mark.parametrize("auth", ["implicit", "xcap"])
def test_dialog_and_mwi_follow_the_presentitys_decisions_per_package(auth):
    from pa_handlers.authorization import Authorizer
    from pa_handlers.records import Decision
    decided = Decided({("dialog", "alice@x"): Decision("active", "")})
    authorizer = Authorizer(settings(auth=auth), decided, lambda: 0)
    assert authorizer.authorize(packages.DIALOG, "registrar", "bob@x", "alice@x").status == \
        "active"
    assert authorizer.authorize(packages.MESSAGE_SUMMARY, "registrar", "bob@x",
                                "alice@x").status == "pending"
    assert authorizer.authorize(packages.MESSAGE_SUMMARY, "registrar", "bob@x",
                                "bob@x").status == "active"


@pytest.mark.parametrize("auth, stranger", [("implicit", "terminated"), ("xcap", "terminated"),
                                            ("none", "active")])
def test_reg_is_for_the_aor_itself(auth, stranger):
    from pa_handlers.authorization import Authorizer
    authorizer = Authorizer(settings(auth=auth), Decided({}), lambda: 0)
    assert authorizer.authorize(packages.REG, "registrar", "bob@x", "bob@x").status == "active"
    assert authorizer.authorize(packages.REG, "registrar", "bob@x", "eve@x").status == stranger
