"""The XMPP gateway (SER's jabber domain, RFC 7248 / RFC 8048): the
decisions, as plain values.  pa_handlers.xmpp_component connects them to
an XMPP server as an external component (XEP-0114).

Names.  A SIP user alice@<xmpp_sip_domain> is, on the XMPP side,
alice@<xmpp_component>.  An XMPP user juliet@xmpp.example.org is, on the
SIP side, the presentity sip:juliet@xmpp.example.org of the `jabber`
domain (the sample routing hands SUBSCRIBEs for `xmpp_domains` to
handle_subscription("jabber")).

SIP -> XMPP.  For each SIP user watching an XMPP user (a `jabber`
subscription), the gateway keeps one XMPP presence subscription from the
SIP user's JID to the XMPP user (RFC 6121 3), ending it when the last SIP
subscription of that pair ends.  The XMPP user's presence arrives per
resource and becomes one publication per resource (origin 'jabber'),
aggregated and NOTIFYed like any other; Kamailio sends the NOTIFYs (the
gateway asks it through the task queue).

XMPP -> SIP.  An XMPP user subscribing to a SIP user's JID is authorized
like a SIP watcher (the `auth` setting); once approved it receives the SIP
user's aggregated presence (registrar domain) and every change of it.

Everything the gateway knows is in the database (pa_xmpp_link), so it
rebuilds its view after its own restart, the XMPP server's or Kamailio's.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from . import pidf
from .authorization import Authorizer
from .clock import clock_of
from .compositor import Compositor
from .config import Settings
from .packages import PRESENCE
from .records import (ACTIVE, JABBER, PENDING, REGISTRAR, TERMINATED, DocumentKey, TaskKind)
from .store import Store
from .xmpp_mapping import (MAX_RESOURCE_BYTES, XmppPresence, pidf_from_xmpp, received,
                           xmpp_from_pidf)

log = logging.getLogger("pa.gateway")

# Its publications, in the presence documents of the jabber domain.
ORIGIN = JABBER
OUT, IN = "out", "in"
# An XMPP user's presence stays valid this long without news; the
# gateway refreshes what it still sees well before.
PUBLICATION_LIFETIME = 3600
# Addresses on the SIP side (presentities, watchers, the gateway's links)
# have at most this many characters: an XMPP address that needs more has
# no SIP counterpart.
MAX_ADDRESS = 255


@dataclasses.dataclass(frozen=True)
class Stanza:
    """A presence stanza to send: type '' (available), 'unavailable',
    'subscribe', 'subscribed', 'unsubscribe', 'unsubscribed' or 'probe'."""
    type: str
    from_jid: str
    to_jid: str
    presence: XmppPresence | None = None


SOURCE = "xmpp"


class Gateway:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float]):
        self.settings = settings
        self.clock = clock_of(clock)
        self.xmpp = store.xmpp
        self.documents = store.documents
        self.tasks = store.tasks
        self.component = settings.xmpp_component
        self.sip_domain = settings.xmpp_sip_domain
        self.authorizer = Authorizer(settings, store.decisions, self.clock)
        # The gateway cannot send SIP: Kamailio's timer does the fan-out.
        self.compositor = Compositor(settings, store.documents, self.clock, self._fan_out_later)

    def now(self) -> int:
        return self.clock.now()

    def _fan_out_later(self, key: DocumentKey) -> list:
        self.tasks.enqueue(TaskKind.FAN_OUT, key.presentity, key.presence_domain, self.now(),
                           key.event)
        return []

    # -- names --------------------------------------------------------------

    def jid_of_sip_user(self, aor: str) -> str:
        return aor.rpartition("@")[0] + "@" + self.component

    def sip_user_of_jid(self, jid: str) -> str | None:
        user, _, domain = jid.partition("/")[0].rpartition("@")
        if domain.lower() != self.component or not user:
            return None
        return f"{user}@{self.sip_domain}"

    # -- SIP watchers of XMPP users --------------------------------------

    def sync_subscriptions(self) -> list[Stanza]:
        """Make the XMPP subscriptions follow the SIP ones: subscribe for a
        new (SIP watcher, XMPP user) pair, unsubscribe for a pair no SIP
        subscription needs any more."""
        wanted = self.xmpp.watch_pairs(JABBER, PRESENCE.name, self.now())
        links = self.xmpp.links(OUT)
        stanzas = []
        for watcher, jid in sorted(wanted - set(links)):
            self.xmpp.save_link(OUT, watcher, jid, "subscribing", self.now())
            stanzas.append(Stanza("subscribe", self.jid_of_sip_user(watcher), jid))
            log.info("XMPP subscription of %s to %s requested", watcher, jid)
        for watcher, jid in sorted(set(links) - wanted):
            self.xmpp.delete_link(OUT, watcher, jid)
            stanzas.append(Stanza("unsubscribe", self.jid_of_sip_user(watcher), jid))
            log.info("XMPP subscription of %s to %s ended", watcher, jid)
            if not any(j == jid for _, j in wanted):
                self._forget_presence(jid)
        return stanzas

    def on_presence(self, from_jid: str, to_jid: str, presence: XmppPresence) -> None:
        """An XMPP user's presence, as one of its resources sends it to the
        SIP users who subscribed: the user's document is rebuilt from all
        its resources at once (one tuple each, one person for the most
        available), and published."""
        bare, _, resource = from_jid.partition("/")
        bare = bare.lower()
        if len(bare) > MAX_ADDRESS or not self.xmpp.links(OUT, jid=bare):
            return  # nobody asked for it
        now = self.now()
        presence = received(dataclasses.replace(presence, resource=resource or presence.resource))
        if len(presence.resource.encode("utf-8", "surrogatepass")) > MAX_RESOURCE_BYTES:
            log.warning("presence of %s ignored: resource longer than XMPP allows", bare)
            return
        resources = self.xmpp.save_resource(bare, presence.resource, presence.available,
                                            presence.show, presence.status, presence.priority,
                                            now, self.settings.xmpp_max_resources)
        if resources is None:
            log.warning("presence of %s ignored: more than %d resources (xmpp_max_resources)",
                        bare, self.settings.xmpp_max_resources)
            return
        available = [XmppPresence(True, r.shown, r.status, r.priority, r.resource)
                     for r in resources]
        if available:
            document = pidf_from_xmpp("sip:" + bare, available)
            parts = pidf.parse_publication(document, self.settings.default_priority)
            changes = {SOURCE: (parts.dumps(), now + PUBLICATION_LIFETIME)}
        else:
            changes = {SOURCE: None}
        self._publish(bare, lambda existing: changes)

    def on_subscription_answer(self, from_jid: str, to_jid: str, approved: bool) -> None:
        """The XMPP user approved ('subscribed') or refused ('unsubscribed')
        a SIP user's subscription."""
        watcher = self.sip_user_of_jid(to_jid)
        bare = from_jid.partition("/")[0].lower()
        if watcher is None or self.xmpp.link_state(OUT, watcher, bare) is None:
            return  # not ours (any more)
        if approved:
            self.xmpp.save_link(OUT, watcher, bare, "subscribed", self.now())
        else:
            # The SIP watchers keep their subscriptions and see the XMPP
            # user closed; nothing is published for a refusal.
            self.xmpp.save_link(OUT, watcher, bare, "refused", self.now())
            log.info("%s refused the XMPP subscription of %s", bare, watcher)

    def _forget_presence(self, jid: str) -> None:
        self.xmpp.forget_resources(jid)
        self._publish(jid, lambda existing: {source: None for source in existing})

    def _publish(self, jid: str, decide) -> None:
        self.compositor.reconcile(DocumentKey(jid, JABBER, PRESENCE.name), ORIGIN, decide)

    def refresh_publications(self) -> None:
        """Keep the XMPP users' publications alive while the gateway runs
        (if it stops, they expire and their watchers see them closed)."""
        self.documents.extend_origin(ORIGIN, JABBER, self.now() + PUBLICATION_LIFETIME)

    # -- XMPP watchers of SIP users -----------------------------------------

    def on_subscribe(self, from_jid: str, to_jid: str) -> list[Stanza]:
        """An XMPP user asks for a SIP user's presence."""
        sip_user = self.sip_user_of_jid(to_jid)
        watcher = from_jid.partition("/")[0].lower()
        if sip_user is None or len(sip_user) > MAX_ADDRESS or len(watcher) > MAX_ADDRESS:
            # No such SIP user, or a watcher no SIP user could approve:
            # refused at once rather than left waiting, and never stored.
            log.info("XMPP subscription of %.80s to %.80s refused: no such SIP user",
                     watcher, to_jid)
            return [Stanza("unsubscribed", to_jid.partition("/")[0], watcher)]
        decision = self.authorizer.authorize(PRESENCE, REGISTRAR, sip_user, watcher)
        if decision.status == TERMINATED:
            self.xmpp.delete_link(IN, sip_user, watcher)
            log.info("XMPP watcher %s of %s refused", watcher, sip_user)
            return [Stanza("unsubscribed", to_jid, watcher)]
        if decision.status == PENDING:
            self.xmpp.save_link(IN, sip_user, watcher, PENDING, self.now())
            log.info("XMPP watcher %s of %s waits for authorization", watcher, sip_user)
            return []
        self.xmpp.save_link(IN, sip_user, watcher, ACTIVE, self.now())
        log.info("XMPP watcher %s of %s approved", watcher, sip_user)
        return [Stanza("subscribed", to_jid, watcher), self._current(sip_user, watcher)]

    def on_unsubscribe(self, from_jid: str, to_jid: str) -> list[Stanza]:
        sip_user = self.sip_user_of_jid(to_jid)
        if sip_user is not None:
            self.xmpp.delete_link(IN, sip_user, from_jid.partition("/")[0].lower())
        return []

    def on_probe(self, from_jid: str, to_jid: str) -> list[Stanza]:
        """The XMPP server asks for a SIP user's presence (its user logged
        in): answer the approved watchers only."""
        sip_user = self.sip_user_of_jid(to_jid)
        watcher = from_jid.partition("/")[0].lower()
        if sip_user is None or self.xmpp.link_state(IN, sip_user, watcher) != ACTIVE:
            return []
        return [self._current(sip_user, watcher)]

    def _current(self, sip_user: str, watcher: str) -> Stanza:
        version, document = self.documents.current(DocumentKey(sip_user, REGISTRAR,
                                                               PRESENCE.name))
        self.xmpp.mark_link_version(IN, sip_user, watcher, version)
        return self._presence_stanza(sip_user, watcher, document)

    def _presence_stanza(self, sip_user: str, watcher: str, document: bytes | None) -> Stanza:
        presence = xmpp_from_pidf(document)
        return Stanza("" if presence.available else "unavailable",
                      self.jid_of_sip_user(sip_user), watcher, presence)

    def changed_presences(self) -> list[Stanza]:
        """Presence for the XMPP watchers of SIP users whose document
        changed since they were last told, and for watchers the
        authorization now lets in (or throws out)."""
        stanzas = []
        for sip_user, watcher, state, version, current, document in \
                self.xmpp.watchers_to_update(REGISTRAR, PRESENCE.name):
            if state == PENDING:
                decision = self.authorizer.authorize(PRESENCE, REGISTRAR, sip_user, watcher)
                if decision.status == ACTIVE:
                    self.xmpp.save_link(IN, sip_user, watcher, ACTIVE, self.now())
                    stanzas += [Stanza("subscribed", self.jid_of_sip_user(sip_user), watcher),
                                self._current(sip_user, watcher)]
                elif decision.status == TERMINATED:
                    self.xmpp.delete_link(IN, sip_user, watcher)
                    stanzas.append(Stanza("unsubscribed", self.jid_of_sip_user(sip_user), watcher))
                continue
            if current != version:
                self.xmpp.mark_link_version(IN, sip_user, watcher, current)
                stanzas.append(self._presence_stanza(sip_user, watcher, document))
        return stanzas

    # -- (re)connection ---------------------------------------------------------

    def resync(self) -> list[Stanza]:
        """After connecting (first start, or the XMPP server came back):
        ask again for the presence we need, and tell the approved XMPP
        watchers the current presence of their SIP users."""
        stanzas = self.sync_subscriptions()
        asked = {(s.from_jid, s.to_jid) for s in stanzas}
        for (watcher, jid), state in self.xmpp.links(OUT).items():
            me = self.jid_of_sip_user(watcher)
            if state == "subscribed":
                # The server keeps subscriptions; a probe brings the current
                # presence of every resource, so what we knew before is
                # dropped.  (A probe before approval would only earn an
                # 'unsubscribed', RFC 6121 4.3.2.)
                self.xmpp.forget_resources(jid)
                stanzas.append(Stanza("probe", me, jid))
            elif (me, jid) not in asked:
                stanzas.append(Stanza("subscribe", me, jid))
        for sip_user, watcher in self.xmpp.links(IN, state=ACTIVE):
            stanzas.append(self._current(sip_user, watcher))
        return stanzas
