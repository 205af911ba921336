"""The routing of kamailio.cfg.sample (cfgengine "python"): a presence
server that answers SUBSCRIBE and PUBLISH with the presence agent.

Operators with their own KEMI script do the same in theirs: `import
pa_kemi`, keep `pa_kemi.load()` from mod_init, call its handlers from the
request route (`handle_backend_notify` for NOTIFY), `handle_notify_reply`
from the reply route, `on_timer` from
an rtimer route every second and `on_answers` from one every 50 ms.
"""

import KSR

import pa_kemi

# Seconds a rate-limited source is asked to wait: pike lets it in again
# after a sampling period (one second) within its rate.
RATE_LIMIT_RETRY_AFTER = 2


def mod_init():
    pa = pa_kemi.load()
    return PresenceRouting(pa) if pa is not None else None


# auth_check()'s answer when the credentials are valid but belong to
# another user than the request's From (SUBSCRIBE) or To (REGISTER).
AUTH_USER_MISMATCH = -8


class PresenceRouting:
    def __init__(self, pa):
        self.pa = pa
        self.publisher = ""

    def child_init(self, rank):
        return self.pa.child_init(rank)

    def ksr_request_route(self, msg):
        try:
            return self.route(msg)
        except UnicodeDecodeError:
            # A part Kamailio parsed (method, From, To...) is not UTF-8:
            # app_python3 cannot hand it over.  Nothing was sent yet.
            pa_kemi.log.warning("request from %s:%s not UTF-8: answered 400",
                                KSR.pv.get("$si"), KSR.pv.get("$sp"))
            KSR.sl.send_reply(400, "Bad Request (Not UTF-8)")
        except Exception:
            pa_kemi.log.exception("request route failed")
            KSR.sl.send_reply(500, "Server Internal Error")
        return 1

    def route(self, msg):
        if KSR.pike.pike_check_req() < 0:
            # The source sent more than PA_RATE_LIMIT requests a second
            # (module pike): a stateless 503 tells a well-behaved client to
            # back off, where silence would only bring retransmissions.
            if KSR.pv.get("$rm") != "ACK":
                KSR.hdr.append_to_reply("Retry-After: %d\r\n" % RATE_LIMIT_RETRY_AFTER)
                KSR.sl.sl_send_reply(503, "Service Unavailable (Rate Limit)")
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        method = KSR.pv.get("$rm")
        if method == "SUBSCRIBE":
            # Presentities of the XMPP domains live in the jabber domain,
            # fed by the XMPP gateway.
            domain = "jabber" if (KSR.pv.get("$rd") or "").lower() in \
                self.pa.settings.xmpp_domains else "registrar"
        if method in ("SUBSCRIBE", "PUBLISH", "REGISTER"):
            # Statefully, as SER's manual says (t_newtran first): the
            # transaction absorbs retransmissions and carries the reply,
            # and a retransmission never reaches auth's nonce_count check,
            # which would take its nonce-count for a replay.
            rc = KSR.tm.t_newtran()
            if rc == 0:
                return 1  # a retransmission, answered by tm
            if rc < 0:
                KSR.sl.sl_reply_error()
                return 1
            if not self.authenticated(method):
                return 1
        if method in ("SUBSCRIBE", "PUBLISH"):
            if method == "SUBSCRIBE":
                self.pa.handle_subscription(msg, domain)
            else:
                self.pa.handle_publish(msg, "registrar", self.publisher)
            return 1
        if method == "REGISTER":
            # Kamailio's registrar stores the bindings and answers; presence
            # follows them before the answer leaves (flag 0x02: no reply
            # yet), so a phone that publishes on its 200 finds its
            # registration there.
            if KSR.registrar.save("location", 0x02) > 0:
                self.pa.handle_registration(msg, "registrar")
            KSR.registrar.reg_send_reply()
            return 1
        if method == "OPTIONS":
            # RFC 5367 5: a list server says it takes lists in SUBSCRIBEs.
            KSR.hdr.append_to_reply("Supported: recipient-list-subscribe\r\n")
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if method == "ACK":
            return 1
        if method == "NOTIFY":
            # NOTIFYs of the back-end subscriptions (list members of other
            # domains); any other gets 481.
            self.pa.handle_backend_notify(msg)
            return 1
        KSR.sl.sl_send_reply(501, "Not Implemented")
        return 1

    def authenticated(self, method):
        """With authorization on (auth other than none), who asks must prove
        it: digest credentials from Kamailio's subscriber table, the user
        being the watcher for a new SUBSCRIBE (From) and the registered
        user for REGISTER (To); for PUBLISH the plugin judges who
        authenticated (only the presentity may publish: 403).  Answers the
        challenge itself, and 403 to valid credentials of another user
        (a new challenge would only make the client loop)."""
        self.publisher = ""
        if self.pa.settings.auth == "none":
            return True
        if method == "SUBSCRIBE" and KSR.pv.get("$tt"):
            return True  # in-dialog: the dialog was authenticated when it began
        realm = KSR.pv.get("$fd" if method == "SUBSCRIBE" else "$td")
        if not realm:
            # Kamailio could not parse the From (To) URI.
            KSR.sl.send_reply(400, "Bad Request (Bad %s URI)" %
                                 ("From" if method == "SUBSCRIBE" else "To"))
            return False
        # SUBSCRIBE, REGISTER: flag 1, the authenticated user must be the
        # From (To) user.  PUBLISH: the credentials only; the plugin
        # compares who authenticated with the presentity.
        rc = KSR.auth_db.auth_check(realm, "subscriber", 0 if method == "PUBLISH" else 1)
        if rc > 0:
            self.publisher = "sip:%s@%s" % (KSR.pv.get("$au"), realm)
            return True
        if rc == AUTH_USER_MISMATCH:
            KSR.sl.send_reply(403, "Forbidden (Credentials Of Another User)")
            return False
        KSR.auth.auth_challenge(realm, 1)
        return False

    def ksr_reply_route(self, msg):
        # Answers to the NOTIFYs and back-end SUBSCRIBEs the agent sent.
        return self.pa.handle_notify_reply(msg)

    def ksr_onsend_route(self, msg):
        return 1

    def ksr_xhttp_event(self, msg, evname=None):
        # HTTP on the SIP TCP port: Prometheus metrics at /metrics, and the
        # built-in XCAP server.
        if KSR.xhttp_prom.check_uri() > 0:
            return self.pa.serve_metrics(msg)  # to the metrics_sources only
        return self.pa.handle_xcap(msg)

    def ksr_registrar_event(self, msg, evname=None):
        # usrloc:contact-expired
        return self.pa.on_contact_expired(msg, evname)

    def ksr_pa_timer(self, msg, evname=None):
        return self.pa.on_timer()

    def ksr_pa_answers(self, msg, evname=None):
        return self.pa.on_answers()
