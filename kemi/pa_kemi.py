"""Kamailio glue of the presence agent, loaded by app_python3.

Two ways to use it:

* native kamailio.cfg: `modparam("app_python3", "load", ".../kemi/pa_kemi.py")`,
  then `python_exec("handle_subscription", "registrar")` and friends; the
  object mod_init() returns has one method per handler.
* a KEMI Python routing script (cfgengine "python"): `import pa_kemi`,
  `pa = pa_kemi.load()` in mod_init, then `pa.handle_subscription(msg,
  "registrar")` from ksr_request_route; see pa_routing.py.

This layer only moves values between KSR and pa_handlers: it reads the
request, calls the presence logic, and sends the reply and NOTIFYs it
decided on.  It never lets an exception reach Kamailio.
"""

import functools
import logging
import os
import re
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import KSR  # noqa: E402  (provided by app_python3)

from pa_handlers import metrics, schema, transport  # noqa: E402
from pa_handlers.agent import PresenceAgent  # noqa: E402
from pa_handlers.config import ConfigError, load_settings  # noqa: E402
from pa_handlers.messages import Context, Outcome  # noqa: E402
from pa_handlers.registration import Binding, choose_binding, registrar_target  # noqa: E402
from pa_handlers.sip import printable  # noqa: E402
from pa_handlers.xcap_server import HttpReply, HttpRequest  # noqa: E402
from pa_handlers.store import Database, Store, StoreUnavailable  # noqa: E402

log = logging.getLogger("pa")


class _KamailioLog(logging.Handler):
    """Python logging into Kamailio's log, prefixed 'pa:'."""

    def emit(self, record):
        try:
            # One line per record, and no control character from the
            # network in it.
            text = "pa: " + printable(self.format(record).replace("\n", " | ")) + "\n"
            if record.levelno >= logging.ERROR:
                KSR.err(text)
            elif record.levelno >= logging.WARNING:
                KSR.warn(text)
            elif record.levelno >= logging.INFO:
                KSR.info(text)
            else:
                KSR.dbg(text)
        except Exception:
            pass


def _setup_logging():
    # Log records without the caller's file and line, thread or process:
    # Kamailio's log line says which process wrote it, and finding the
    # caller costs more than the rest of a record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if not any(isinstance(h, _KamailioLog) for h in log.handlers):
        log.addHandler(_KamailioLog())
        log.setLevel(logging.INFO)
        log.propagate = False


class _Profiler:
    """PA_PROFILE=DIR: each Kamailio process profiles the plugin (CPU time,
    cProfile) and writes DIR/pa-<pid>.prof every 2000 calls, for
    `python3 -m pstats`.  Off unless asked for: it costs CPU itself."""

    def __init__(self, directory):
        self.directory = directory
        self.profile = None
        self.pid = None
        self.calls = 0

    def __enter__(self):
        if self.pid != os.getpid():
            import cProfile
            import time
            self.profile = cProfile.Profile(time.process_time)
            self.pid = os.getpid()
        self.profile.enable()

    def __exit__(self, *exc):
        self.profile.disable()
        self.calls += 1
        if self.calls % 2000 == 0:
            self.profile.dump_stats(os.path.join(self.directory, "pa-%d.prof" % self.pid))


_PROFILER = _Profiler(os.environ["PA_PROFILE"]) if os.environ.get("PA_PROFILE") else None


def _entry(failure_code=None):
    """Wrap a method Kamailio calls: log what escapes, answer 500 to a
    request if nothing was sent, and always return an int."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args):
            try:
                if _PROFILER is not None:
                    with _PROFILER:
                        return method(self, *args)
                return method(self, *args)
            except Exception:
                log.exception("%s failed", method.__name__)
                if failure_code:
                    try:
                        KSR.sl.send_reply(failure_code, "Server Internal Error")
                    except Exception:
                        pass
                return 1
            finally:
                try:
                    self.stats.flush()
                except Exception:
                    log.exception("statistics not updated")
        return run
    return wrap


# Successful answers to our NOTIFYs, queued in shared memory (module
# mqueue) by the workers and ended together by the timer that drains the
# queue (on_answers): one database round trip for many answers.  Key
# "CSeq Call-ID", value "our-tag watcher-tag" (RFC 3261 25.1: no spaces).
ANSWERS = "pa_answers"
# At most so many answers per round trip.
ANSWERS_BATCH = 2000


def _message() -> bytes:
    try:
        return KSR.pv.get("$mb").encode("utf-8")
    except Exception:
        # Not UTF-8: take it hex-encoded, so the core decides (400).
        return bytes.fromhex(KSR.pv.get("$(mb{s.encode.hexa})"))


def _text(spec: str) -> str:
    """A pseudo-variable's text; hex-decoded as Latin-1 when it is not
    UTF-8, so that the core sees every byte and refuses it."""
    try:
        return KSR.pv.get(spec) or ""
    except Exception:
        return bytes.fromhex(KSR.pv.get("$(%s{s.encode.hexa})" % spec[1:]) or "").decode("latin-1")


def _http_request() -> HttpRequest:
    headers = {}
    for name in ("Authorization", "Content-Type", "If-Match", "If-None-Match"):
        value = _text("$hdr(%s)" % name)
        if value:
            headers[name.lower()] = value
    try:
        body = (KSR.pv.get("$rb") or "").encode("utf-8")
    except Exception:
        body = bytes.fromhex(KSR.pv.get("$(rb{s.encode.hexa})") or "")
    return HttpRequest(method=_text("$rm"), path=_text("$hu"), headers=headers, body=body)


# Control characters but HTAB: in a reply header they would end it, or the
# whole head, and let the rest pass for headers or a body of its own.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HTTP_FAILURE = HttpReply(500, "Internal Server Error")


def _header_lines(headers):
    """The reply's header lines, or None when a name or value holds a
    control character."""
    lines = []
    for name, value in headers:
        if _HEADER_CONTROL.search(name) or _HEADER_CONTROL.search(value):
            return None
        lines.append("%s: %s\r\n" % (name, value))
    return lines


def _context(publisher: str = "") -> Context:
    # One crossing into Kamailio for the six values ($_s: them as one
    # string); none holds a space.  A value Kamailio has not ("<null>")
    # is empty.
    parts = [("" if v == "<null>" else v) for v in
             (KSR.pv.get("$_s($ltt(x) $Ras $RAut $pr $si $sp)") or "").split(" ")]
    if len(parts) != 6:
        parts = [KSR.pv.get(spec) or "" for spec in
                 ("$ltt(x)", "$Ras", "$RAut", "$pr", "$si", "$sp")]
    local_tag, socket, local_contact, proto, ip, port = parts
    return Context(local_tag=local_tag, socket=socket, local_contact=local_contact,
                   source="%s:%s:%s" % (proto, ip, port), publisher=publisher)


class _Statistics:
    """Counters in Kamailio's statistics module, when the configuration
    declares them (kemi/pa-statistics.cfg); otherwise nothing is counted."""

    def __init__(self):
        self._enabled = None
        # Counts gathered during one call from Kamailio, added at its end:
        # a fan-out to 200 watchers is one crossing into Kamailio, not 200.
        self._pending = {}

    @property
    def enabled(self) -> bool:
        # Asked once per process: the module is loaded and ours declared.
        if self._enabled is None:
            self._enabled = (hasattr(KSR, "statistics")
                             and KSR.pv.get("$stat(%s)" % metrics.PROBE) is not None)
            if not self._enabled:
                log.debug("statistics not declared: nothing counted")
        return self._enabled

    def add(self, name, n=1):
        """Count now (outside a call from Kamailio, or for what must be
        seen at once)."""
        if self.enabled:
            KSR.statistics.update_stat(name, n)

    def later(self, name, n=1):
        """Count at the end of the current call from Kamailio (flush)."""
        self._pending[name] = self._pending.get(name, 0) + n

    def flush(self):
        if self._pending:
            pending, self._pending = self._pending, {}
            if self.enabled:
                for name, n in pending.items():
                    KSR.statistics.update_stat(name, n)

    def request(self, method, code, started_ns):
        if self.enabled:
            update = KSR.statistics.update_stat
            update(metrics.requests(method), 1)
            update(metrics.answer(method, code), 1)
            update(metrics.handling_time(method), (time.perf_counter_ns() - started_ns) // 1000)

    def set_gauges(self, values):
        """A statistic has no set: add the difference.  Only the timer
        process sets gauges."""
        for name, value in values.items():
            current = KSR.pv.get("$stat(%s)" % name)
            if current is not None and int(current) != value:
                KSR.statistics.update_stat(name, value - int(current))


class PresenceAgentKemi:
    """The handlers, bound to this Kamailio process's database connection."""

    def __init__(self, settings):
        self.settings = settings
        self._agent = None
        self._pid = None
        self._local_sockets = {}
        self.stats = _Statistics()
        self._next_gauges = 0.0
        self._queue = None   # whether the configuration defines mqueue pa_answers

    @property
    def agent(self) -> PresenceAgent:
        # Created lazily in each child process, after Kamailio's fork.
        if self._agent is None or self._pid != os.getpid():
            db = Database.for_settings(self.settings, on_retry=self._counted_retry)
            self._agent = PresenceAgent(self.settings, Store(db))
            self._pid = os.getpid()
            self._local_sockets = {}
        return self._agent

    def child_init(self, rank):
        return 0

    def _counted_retry(self, code):
        self.stats.add(metrics.DB_RETRIES)

    @_entry(failure_code=500)
    def handle_subscription(self, msg, domain="registrar"):
        started = time.perf_counter_ns()
        outcome = self.agent.handle_subscription(_message(), _context(), domain)
        self._answer(outcome)
        self.stats.request("subscribe", outcome.reply.code, started)
        return 1

    @_entry(failure_code=500)
    def handle_publish(self, msg, domain="registrar", publisher=None):
        """`publisher`: the identity your routing authenticated (a SIP URI);
        from native routing, set $avp(pa_publisher) before python_exec."""
        started = time.perf_counter_ns()
        if publisher is None:
            publisher = KSR.pv.get("$avp(pa_publisher)") or ""
        outcome = self.agent.handle_publish(_message(), _context(publisher), domain)
        self._answer(outcome)
        self.stats.request("publish", outcome.reply.code, started)
        return 1

    @_entry()
    def handle_registration(self, msg, domain="registrar", table="location"):
        """Call after registrar's save() succeeded, best before its reply
        (save with flag 0x02, then reg_send_reply()): reads the AOR's
        bindings back from usrloc and turns them into tuples."""
        aor = KSR.pv.get("$tu")
        call_id = KSR.pv.get("$ci")
        source = _context().source
        bindings = []
        if KSR.registrar.reg_fetch_contacts(table, aor, "pa") > 0:
            for i in range(int(KSR.pv.get("$ulc(pa=>count)") or 0)):
                q = int(KSR.pv.get("$(ulc(pa=>q)[%d])" % i))
                binding_call_id = KSR.pv.get("$(ulc(pa=>callid)[%d])" % i) or ""
                expires = int(KSR.pv.get("$(ulc(pa=>expires)[%d])" % i))
                bindings.append(Binding(
                    contact=KSR.pv.get("$(ulc(pa=>addr)[%d])" % i),
                    q=q / 1000.0 if q >= 0 else None,
                    # 0: a permanent binding.
                    expires_at=expires or 2**31 - 1,
                    key=KSR.pv.get("$(ulc(pa=>ruid)[%d])" % i),
                    instance=KSR.pv.get("$(ulc(pa=>instance)[%d])" % i) or "",
                    call_id=binding_call_id,
                    cseq=int(KSR.pv.get("$(ulc(pa=>cseq)[%d])" % i) or 0),
                    # Where this REGISTER came from names its own bindings.
                    source=source if binding_call_id == call_id
                    else ""))
            KSR.registrar.reg_free_contacts("pa")
        for notify in self.agent.handle_registration(domain, aor, bindings):
            self._send_notify(notify)
        return 1

    @_entry()
    def on_contact_expired(self, msg=None, evname=None):
        """registrar's usrloc:contact-expired event."""
        aor = KSR.pv.get("$ulc(exp=>aor)") or ""
        if not aor.startswith(("sip:", "sips:")):
            aor = "sip:" + aor  # usrloc keeps user@domain
        for notify in self.agent.handle_binding_expired("registrar", aor,
                                                        KSR.pv.get("$ulc(exp=>ruid)") or ""):
            self._send_notify(notify)
        return 1

    @_entry()
    def handle_notify_reply(self, msg=None):
        """Call from the reply route: the answers to our NOTIFYs.  The
        reply route sees every reply that arrives; only one that belongs
        to a transaction of this node (tm matched its Via branch) is
        passed on, and the store acts on it only if it answers the NOTIFY
        in flight: a forged or stray answer changes nothing."""
        # One crossing into Kamailio for what is read of every reply ($_s:
        # the values as one string), not one per value.  Call-IDs and tags
        # hold no spaces (RFC 3261 25.1): a reply that splits otherwise is no
        # answer of ours.
        parts = (KSR.pv.get("$_s($rm $rs $cs $ci $ft $tt)") or "").split(" ")
        if len(parts) >= 2 and parts[0] == "SUBSCRIBE" and parts[1].isdigit():
            # Answers to our back-end SUBSCRIBEs (members of other domains).
            if int(parts[1]) >= 200 and KSR.tm.t_check_trans() > 0:
                for notify in self.agent.handle_backend_reply(_message()):
                    self._send_notify(notify)
            return 1
        if len(parts) != 6 or parts[0] != "NOTIFY" or not parts[1].isdigit():
            return 1
        _, code, cseq, call_id, from_tag, to_tag = parts
        code = int(code)
        if code < 200 or KSR.tm.t_check_trans() < 0:
            return 1
        # Our NOTIFY's From tag is our tag, its To tag the watcher's.
        tags = "%s %s" % (from_tag, to_tag)
        if code < 300 and self._answers_queue() and \
                KSR.mqueue.mq_add(ANSWERS, "%s %s" % (cseq, call_id), tags) > 0:
            return 1    # counted with its batch (on_answers)
        self.stats.later(metrics.notify_answer(code))
        dialog = (call_id, *tags.split(" "))
        for notify in self.agent.handle_notify_reply(dialog, int(cseq), code):
            self._send_notify(notify)
        return 1

    @_entry(failure_code=500)
    def handle_backend_notify(self, msg=None):
        """Call from the request route for NOTIFY: those of our back-end
        subscriptions get 200 and feed their lists' members, others 481."""
        self._answer(self.agent.handle_backend_notify(_message(), _context()))
        return 1

    def _send_request(self, request):
        """A back-end SUBSCRIBE; its answer comes to handle_notify_reply,
        its silence is the core's timeout."""
        socket = request.socket if self._is_local(request.socket) else ""
        if KSR.tm.t_uac_send(request.method, request.ruri, request.nexthop, socket,
                             request.headers, request.body) < 0:
            log.warning("%s to %s could not be sent; it times out and is retried",
                        request.method, request.ruri)

    def _answers_queue(self) -> bool:
        if self._queue is None:
            self._queue = hasattr(KSR, "mqueue") and KSR.mqueue.mq_size(ANSWERS) != -2
            if not self._queue:
                log.info("mqueue %s not defined: each answer to a NOTIFY is one database"
                         " round trip; define it as kamailio.cfg.sample does", ANSWERS)
        return self._queue

    @_entry()
    def on_answers(self, msg=None, evname=None):
        """Call from a timer every few tens of milliseconds (rtimer; on_timer
        does it too, every second): ends the NOTIFYs whose answers the
        workers queued, together."""
        if not self._answers_queue():
            return 1
        answers = []
        # The fetched key and value in one crossing into Kamailio ($_s).
        fetched = "$_s($mqk(%s) $mqv(%s))" % (ANSWERS, ANSWERS)
        while len(answers) < ANSWERS_BATCH and KSR.mqueue.mq_fetch(ANSWERS) > 0:
            cseq, call_id, local_tag, remote_tag = KSR.pv.get(fetched).split(" ")
            answers.append(((call_id, local_tag, remote_tag), int(cseq)))
        if answers:
            self.stats.later(metrics.NOTIFY_OK, len(answers))
            for notify in self.agent.handle_notify_answers(answers):
                self._send_notify(notify)
        return 1

    @_entry()
    def handle_xcap(self, msg=None, evname=None):
        """The built-in XCAP server: call from xhttp's event route.  Every
        request gets an answer."""
        try:
            reply, notifies = self.agent.handle_xcap(_http_request())
            lines = _header_lines(reply.headers)
            if lines is None:
                log.error("XCAP answer %d refused: a header holds a control character",
                          reply.code)
                reply, lines = _HTTP_FAILURE, []
            for line in lines:
                KSR.hdr.append_to_reply(line)
            KSR.xhttp.xhttp_reply(reply.code, reply.reason, reply.content_type,
                                  reply.body.decode("utf-8"))
        except Exception:
            log.exception("handle_xcap failed")
            KSR.xhttp.xhttp_reply(_HTTP_FAILURE.code, _HTTP_FAILURE.reason, "", "")
            return 1
        for notify in notifies:
            self._send_notify(notify)
        return 1

    @_entry()
    def serve_metrics(self, msg=None, evname=None):
        """Prometheus at /metrics (module xhttp_prom), for the addresses of
        metrics_sources only: call from xhttp's event route when
        xhttp_prom's check_uri matched."""
        if metrics.source_allowed(self.settings.metrics_sources, KSR.pv.get("$si") or ""):
            KSR.xhttp_prom.dispatch()
        else:
            KSR.xhttp.xhttp_reply(403, "Forbidden", "", "")
        return 1

    @_entry()
    def on_timer(self, arg=None):
        """Call every second (rtimer); runs the sweeps every timer_interval."""
        self.on_answers()
        for notify in self.agent.on_timer():
            self._send_notify(notify)
        requests, notifies = self.agent.backend_due()
        for request in requests:
            self._send_request(request)
        for notify in notifies:
            self._send_notify(notify)
        unanswered = self.agent.unanswered_notifies()
        if unanswered:
            self.stats.add(metrics.NOTIFY_UNANSWERED, unanswered)
        if self.stats.enabled and time.time() >= self._next_gauges:
            self._next_gauges = time.time() + self.settings.gauges_interval
            self.stats.set_gauges(self.agent.gauges())
        return 1

    def _answer(self, outcome: Outcome):
        reply = outcome.reply
        if reply.headers:
            # All the reply's header lines in one crossing into Kamailio.
            KSR.hdr.append_to_reply("".join("%s: %s\r\n" % (name, value)
                                            for name, value in reply.headers))
        KSR.sl.send_reply(reply.code, reply.reason)
        for notify in outcome.notifies:
            self._send_notify(notify)

    def _send_notify(self, notify):
        # In flight in the database until its answer or notify_timeout.
        # Too large for UDP: over TCP, or not at all (transport.fit logs it).
        fitted = transport.fit(notify, self.settings.notify_udp_mtu)
        if fitted is None:
            self.stats.later(metrics.NOTIFY_NOT_SENT)
            # Nothing will answer it: its wait ends as an answer 513
            # (Message Too Large) would end it, and the subscription stays.
            for newer in self.agent.handle_notify_reply(notify.dialog, notify.cseq, 513):
                self._send_notify(newer)
            return
        notify = fitted
        socket = notify.socket if self._is_local(notify.socket) else ""
        ruri, nexthop = self._registered_route(notify)
        rc = KSR.tm.t_uac_send("NOTIFY", ruri, nexthop, socket, notify.headers, notify.body)
        if rc < 0:
            self.stats.later(metrics.NOTIFY_NOT_SENT)
            log.warning("NOTIFY to %s (call-id=%s cseq=%d) could not be sent; the subscription"
                        " ends", notify.ruri, notify.call_id, notify.cseq)
            for final in self.agent.handle_notify_unsendable(notify.dialog, notify.cseq):
                self._send_notify(final)
            return
        self.stats.later(metrics.NOTIFY_SENT)

    def _registered_route(self, notify, table="location"):
        """Request-URI and next hop of a NOTIFY: where its dialog says, or,
        when the target is a GRUU or an AOR of this registrar, the
        registered device, as a proxy would route it (usrloc look-up)."""
        wanted = None if notify.nexthop else registrar_target(notify.ruri)
        if wanted is None:
            return notify.ruri, notify.nexthop
        aor, instance = wanted
        bindings = []
        if KSR.registrar.reg_fetch_contacts(table, aor, "pa_route") > 0:
            for i in range(int(KSR.pv.get("$ulc(pa_route=>count)") or 0)):
                q = int(KSR.pv.get("$(ulc(pa_route=>q)[%d])" % i))
                bindings.append(Binding(
                    contact=KSR.pv.get("$(ulc(pa_route=>addr)[%d])" % i),
                    q=q / 1000.0 if q >= 0 else None, expires_at=0, key="",
                    instance=KSR.pv.get("$(ulc(pa_route=>instance)[%d])" % i) or "",
                    received=KSR.pv.get("$(ulc(pa_route=>received)[%d])" % i) or ""))
            KSR.registrar.reg_free_contacts("pa_route")
        chosen = choose_binding(bindings, instance)
        if chosen is None:
            return notify.ruri, notify.nexthop
        return chosen.contact, chosen.received

    def _is_local(self, socket):
        """Whether this node listens on `socket` (another node may have
        taken the subscription); unknown sockets let Kamailio choose."""
        known = self._local_sockets.get(socket)
        if known is None:
            proto, _, hostport = socket.partition(":")
            known = bool(hostport) and KSR.is_myself("sip:%s;transport=%s" % (hostport, proto)) > 0
            self._local_sockets[socket] = known
        return known


def _check_database(settings) -> bool:
    """At start, before the fork: refuse a database without our schema;
    only warn when it cannot be reached (service resumes when it is back)."""
    db = Database.for_settings(settings, min(settings.db_timeout, 2.0))
    try:
        version = Store(db).admin.schema_version()
    except StoreUnavailable as e:
        log.warning("database not reachable at start (%s); requests get 500 until it is", e)
        return True
    finally:
        db.discard()
    trouble = schema.problem(version)
    if trouble:
        log.error("database %s: %s", settings.db_url.redacted(), trouble)
        return False
    return True


def load():
    """Read the settings named by PA_CONFIG and check the database; returns
    the handlers, or None (after one clear log line) to stop Kamailio."""
    _setup_logging()
    path = os.environ.get("PA_CONFIG")
    try:
        settings = load_settings(path)
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return None
    if not _check_database(settings):
        return None
    log.info("presence agent ready (settings %s, database %s)", path, settings.db_url.redacted())
    return PresenceAgentKemi(settings)


def mod_init():
    return load()
