"""B2 fan-out: one presentity, N watchers, 20 sequential modifications.
BLF: the same with Event: dialog (busy-lamp watchers of one extension).
B4 (two nodes): the same through both nodes, plus subscriptions with a
short expiry whose final NOTIFYs are counted while the load runs.

One UDP socket plays all N watchers (N dialogs: distinct Call-IDs and From
tags, the same Contact) and the publisher.  Every NOTIFY is answered 200
at once.  For each modification (a PUBLISH with SIP-If-Match chained from
the previous 200's SIP-ETag and a note `bench-step-K`) we measure the time
from sending the PUBLISH until the last watcher received a NOTIFY carrying
that note; NOTIFYs of older steps are answered and otherwise ignored.

With several servers (nodes of one cluster), watcher i subscribes through
node i mod n and PUBLISH k goes to node k mod n; every NOTIFY is answered
to where it came from.  `expiring` more subscriptions (another presentity,
Expires `expiry_seconds`, also spread over the nodes) must each get exactly
one NOTIFY with Subscription-State terminated (distinct CSeqs: a
retransmission is not a second one); the modifications go on until they
all did and a further `expiry_linger` seconds passed (a second node's
sweep would send a duplicate within one period), or until the deadline.

Standalone: python3 bench/fanout.py --port 35060 --watchers 200
       (two nodes: --port 35060 35062 --expiring 100)
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import select
import time
from typing import Callable

import ports
import procs
import sipmsg

PRESENTITY = "sip:fanout@127.0.0.1"
EXPIRING_PRESENTITY = "sip:fanout-expiry@127.0.0.1"
# What differs between the packages: (Event, Accept/Content-Type, what a
# NOTIFY with a document holds, the body of step K, its marker, the pattern
# that finds a step in a NOTIFY).  BLF (Event: dialog): the extension's
# dialog state changed by PUBLISH as a proxy running pua_dialoginfo does,
# a new dialog id per step.
PACKAGES = {
    "presence": ("presence", "application/pidf+xml", b"<presence",
                 lambda k: sipmsg.pidf(PRESENTITY, f"bench-step-{k}"),
                 lambda k: f">bench-step-{k}<".encode(), re.compile(rb">bench-step-(\d+)<")),
    "dialog": ("dialog", "application/dialog-info+xml", b"<dialog-info",
               lambda k: sipmsg.dialog_info(PRESENTITY, f"bench-step-{k}",
                                            "early" if k % 2 else "confirmed"),
               lambda k: f'"bench-step-{k}"'.encode(), re.compile(rb'"bench-step-(\d+)"')),
}
RETRANSMIT_AFTER = 1.0
MAX_TRIES = 5


class Fanout:
    def __init__(self, port: int | list[int], watchers: int, expiring: int = 0,
                 expiry_seconds: int = 20, package: str = "presence"):
        (self.event, self.media, self.document, self.body_of, self.marker_of,
         self.step_note) = PACKAGES[package]
        ports_ = [port] if isinstance(port, int) else list(port)
        self.servers = [("127.0.0.1", p) for p in ports_]
        self.server = self.servers[0]
        self.n = watchers
        self.expiring_n = expiring
        self.expiry_seconds = expiry_seconds
        # Expiring subscriptions: call-id -> CSeqs of its terminating NOTIFYs.
        self.expiring: dict[str, set[int]] = {}
        self.expiring_started: set[str] = set()   # got a first, active NOTIFY
        self.last_terminated_at = 0.0
        # Distinct NOTIFYs (call-id, CSeq) to the fan-out watchers.
        self.distinct_notifies: set[tuple[str, str]] = set()
        self.sock = sipmsg.udp_socket()
        self.local = self.sock.getsockname()
        self.nonce = secrets.token_hex(4)
        self.contact = f"<sip:watchers@{self.local[0]}:{self.local[1]}>"
        self.pub_call_id = f"fo-pub-{self.nonce}"
        self.pub_cseq = 0
        self.etag: str | None = None
        self.notifies = 0
        # Per step: the call-ids that got its NOTIFY; set by _on_notify.
        self.marker: bytes | None = None
        self.marked: set[str] = set()
        # NOTIFYs with a step's note (call-id, CSeq), over all steps: more
        # than one per watcher and step is the same change notified twice.
        self.step_notifies: set[tuple[str, str, bytes]] = set()
        self.last_marked_at = 0.0
        self.subscribed: set[str] = set()   # NOTIFY with a document received
        self.pub_reply: sipmsg.Message | None = None
        # SUBSCRIBEs not yet answered: call-id -> (message, sent at, tries, to).
        self.pending: dict[str, tuple[bytes, float, int, tuple]] = {}
        self.pub_to = self.server
        self.failed_subscribe: dict[str, int] = {}

    def close(self) -> None:
        self.sock.close()

    # -- receiving ---------------------------------------------------------

    def _pump(self, until: float, done: Callable[[], bool] = lambda: False) -> None:
        """Handle everything that arrives until `until` (monotonic) or
        until `done()` holds."""
        while not done():
            wait = until - time.monotonic()
            if wait <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                return
            # Drain the socket before looking at the clock again.
            while True:
                try:
                    data, source = self.sock.recvfrom(65535, 0x40)  # MSG_DONTWAIT
                except BlockingIOError:
                    break
                self._handle(sipmsg.Message(data), source)

    def _handle(self, msg: sipmsg.Message, source: tuple = None) -> None:
        if not msg.is_response:
            if msg.method == "NOTIFY":
                self.sock.sendto(sipmsg.response(msg), source or self.server)
                self._on_notify(msg)
            return
        if msg.call_id == self.pub_call_id:
            if msg.status >= 200 and msg.header("cseq").split()[0] == str(self.pub_cseq):
                self.pub_reply = msg
        elif msg.status >= 300 and msg.call_id in self.pending:
            self.failed_subscribe[msg.call_id] = msg.status
            del self.pending[msg.call_id]
        elif msg.status >= 200:
            self.pending.pop(msg.call_id, None)

    def _on_notify(self, msg: sipmsg.Message) -> None:
        self.notifies += 1
        call_id = msg.call_id
        if call_id in self.expiring:
            if is_terminated(msg.header("subscription-state")):
                self.expiring[call_id].add(int(msg.header("cseq").split()[0]))
                self.last_terminated_at = time.monotonic()
            else:
                self.expiring_started.add(call_id)
            return
        self.distinct_notifies.add((call_id, msg.header("cseq")))
        if msg.body and self.document in msg.body:
            self.subscribed.add(call_id)
        step = self.step_note.search(msg.body)
        if step:
            self.step_notifies.add((call_id, msg.header("cseq"), step.group(1)))
        if self.marker and self.marker in msg.body and call_id not in self.marked:
            self.marked.add(call_id)
            self.last_marked_at = time.monotonic()

    # -- publishing --------------------------------------------------------

    def publish(self, step: int) -> bytes:
        """Send a PUBLISH (a modification once we hold an entity-tag);
        returns it for retransmission."""
        self.pub_cseq += 1
        self.pub_reply = None
        # Through each node in turn (one node: always the same).
        self.pub_to = self.servers[self.pub_cseq % len(self.servers)]
        msg = sipmsg.publish(PRESENTITY, self.local, self.pub_call_id, self.pub_cseq,
                             self.body_of(step), etag=self.etag, event=self.event,
                             content_type=self.media)
        self.sock.sendto(msg, self.pub_to)
        return msg

    def _await_publish(self, msg: bytes, deadline: float) -> None:
        sent, tries = time.monotonic(), 1
        while self.pub_reply is None and time.monotonic() < deadline:
            self._pump(min(deadline, time.monotonic() + 0.05), lambda: self.pub_reply is not None)
            if self.pub_reply is None and time.monotonic() - sent > RETRANSMIT_AFTER and tries < MAX_TRIES:
                self.sock.sendto(msg, self.pub_to)
                sent, tries = time.monotonic(), tries + 1

    def _take_etag(self) -> bool:
        reply = self.pub_reply
        if reply is None or reply.status != 200 or not reply.header("sip-etag"):
            return False
        self.etag = reply.header("sip-etag")
        return True

    # -- subscribing -------------------------------------------------------

    def subscribe_all(self, rate: float, timeout: float) -> int:
        """N new subscriptions at `rate` per second; returns how many got a
        NOTIFY with the presentity's document."""
        specs = [(f"fo-{self.nonce}-{i}", PRESENTITY, f"sip:watcher{i}@127.0.0.1", f"w{i}", 600)
                 for i in range(self.n)]
        self._subscribe(specs, rate, timeout,
                        lambda: len(self.subscribed) >= self.n - len(self.failed_subscribe))
        return len(self.subscribed)

    def subscribe_expiring(self, rate: float, timeout: float) -> int:
        """The subscriptions whose expiry is watched; returns how many got
        their first NOTIFY."""
        specs = [(f"fx-{self.nonce}-{i}", EXPIRING_PRESENTITY, f"sip:expiring{i}@127.0.0.1",
                  f"x{i}", self.expiry_seconds) for i in range(self.expiring_n)]
        for call_id, *_ in specs:
            self.expiring[call_id] = set()
        self._subscribe(specs, rate, timeout, lambda: len(self.expiring_started) >= self.expiring_n)
        return len(self.expiring_started)

    def _subscribe(self, specs: list, rate: float, timeout: float, done: Callable[[], bool]) -> None:
        """Send the SUBSCRIBEs of `specs` (call-id, presentity, watcher,
        from-tag, expires) at `rate`, the i-th through node i mod n, with
        retransmissions, until `done()` or the timeout."""
        start = time.monotonic()
        deadline = start + len(specs) / rate + timeout
        sent = 0
        while time.monotonic() < deadline:
            due = min(len(specs), int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                call_id, presentity, watcher, tag, expires = specs[sent]
                to = self.servers[sent % len(self.servers)]
                msg = sipmsg.request(
                    "SUBSCRIBE", presentity, self.local, call_id, watcher, tag, presentity, 1,
                    [f"Contact: {self.contact}", f"Event: {self.event}", f"Accept: {self.media}",
                     f"Expires: {expires}"])
                self.sock.sendto(msg, to)
                self.pending[call_id] = (msg, time.monotonic(), 1, to)
                sent += 1
            if sent == len(specs) and done():
                break
            self._pump(time.monotonic() + 0.01)
            now = time.monotonic()
            for call_id, (msg, at, tries, to) in list(self.pending.items()):
                if now - at > RETRANSMIT_AFTER:
                    if tries >= MAX_TRIES:
                        del self.pending[call_id]
                    else:
                        self.sock.sendto(msg, to)
                        self.pending[call_id] = (msg, now, tries + 1, to)

    def _expiry_settled(self, since: float, linger: float) -> bool:
        """Every expiring subscription got its final NOTIFY, and `linger`
        seconds passed since the last of them (room for a duplicate)."""
        return (all(self.expiring.values())
                and time.monotonic() - max(since, self.last_terminated_at) >= linger)

    def expiry_result(self, subscribed_at: float) -> dict:
        counts = [len(c) for c in self.expiring.values()]
        return {
            "subscriptions": self.expiring_n,
            "expires_s": self.expiry_seconds,
            "first_notify": len(self.expiring_started),
            "refused": len([c for c in self.failed_subscribe if c in self.expiring]),
            "terminated_once": counts.count(1),
            "missing": counts.count(0),
            "duplicated": len([c for c in counts if c > 1]),
            "exactly_once": bool(counts) and counts.count(1) == len(counts),
            # From the SUBSCRIBEs to the last final NOTIFY.
            "last_final_notify_s": round(self.last_terminated_at - subscribed_at, 1)
            if self.last_terminated_at else None,
        }

    # -- the measurement ---------------------------------------------------

    def run(self, steps: int = 20, subscribe_rate: float = 200.0, step_timeout: float = 30.0,
            cpu: Callable[[], tuple[float, float]] | None = None, expiry_period: float = 10.0,
            expiry_linger: float | None = None) -> dict:
        """`expiry_period`: how often the server looks for expired
        subscriptions (the deadline of the expiry check is Expires plus
        three periods); `expiry_linger`: how long to go on after the last
        final NOTIFY (default: one period and 2 s)."""
        result: dict = {"watchers": self.n, "steps": steps, "nodes": len(self.servers)}
        if expiry_linger is None:
            expiry_linger = expiry_period + 2.0
        drops = (sum(ports.udp_drops(s[1]) for s in self.servers), ports.udp_drops(self.local[1]))
        first = self.publish(0)
        self._await_publish(first, time.monotonic() + 10)
        if not self._take_etag():
            result["error"] = f"initial PUBLISH: {self.pub_reply.first_line if self.pub_reply else 'no answer'}"
            return result
        expiring_at = time.monotonic()
        if self.expiring_n:
            started = self.subscribe_expiring(subscribe_rate, timeout=15.0)
            if started < self.expiring_n:
                result["error"] = (f"only {started} of {self.expiring_n} expiring subscriptions "
                                   "got their first NOTIFY")
        expiry_deadline = expiring_at + self.expiry_seconds + 3 * expiry_period + 10
        subscribed = self.subscribe_all(subscribe_rate, timeout=15.0)
        result["subscribed"] = subscribed
        if subscribed < self.n:
            result["error"] = f"only {subscribed} of {self.n} watchers got their first NOTIFY"
            if not subscribed:
                return result
        expected = set(self.subscribed)
        latencies: list[float | None] = []
        notified_before = len(self.distinct_notifies)
        cpu_before = cpu() if cpu else None
        started = time.monotonic()
        k = 0
        while True:
            k += 1
            if k > steps and (not self.expiring_n or time.monotonic() > expiry_deadline
                              or self._expiry_settled(started, expiry_linger)):
                break
            self.marker = self.marker_of(k)
            self.marked = set()
            sent_at = time.monotonic()
            msg = self.publish(k)
            deadline = sent_at + step_timeout
            self._await_publish(msg, deadline)
            ok = self._take_etag()
            if ok:
                self._pump(deadline, lambda: expected <= self.marked)
            if ok and expected <= self.marked:
                latencies.append(self.last_marked_at - sent_at)
            else:
                latencies.append(None)
                if not ok:
                    result["error"] = f"step {k}: PUBLISH answered " + (
                        self.pub_reply.first_line if self.pub_reply else "nothing")
                    break
        ended = time.monotonic()
        cpu_after = cpu() if cpu else None
        notified = len(self.distinct_notifies) - notified_before
        self.marker = None
        self._pump(time.monotonic() + 0.5)   # answer late retransmissions
        done = [l for l in latencies if l is not None]
        result.update(
            latencies_ms=[None if l is None else round(l * 1000, 2) for l in latencies],
            steps=len(latencies),
            failed_steps=len(latencies) - len(done),
            # Distinct NOTIFYs (by dialog and CSeq) sent to the watchers
            # per PUBLISH: one per watcher when none is merged or lost.
            notifies_per_publish=round(notified / len(latencies), 1) if latencies else None,
            # Of those, the ones that repeated a step's change to a watcher
            # that had it already (in a NOTIFY of another CSeq).
            duplicate_notifies=repeated_changes(self.step_notifies),
            p50_ms=round(percentile(done, 50) * 1000, 2) if done else None,
            p99_ms=round(percentile(done, 99) * 1000, 2) if done else None,
            notifies_per_s=round(len(expected) * len(done) / (ended - started), 1) if done else None,
            notifies_received=self.notifies,
            # NOTIFYs beyond one per watcher and step: retransmissions.
            notifies_expected=len(expected) * (1 + len(latencies)),
            # Datagrams lost by the server's and by our socket (full buffers).
            server_udp_drops=sum(ports.udp_drops(s[1]) for s in self.servers) - drops[0],
            client_udp_drops=ports.udp_drops(self.local[1]) - drops[1],
        )
        if cpu and done:
            result.update(procs.cpu_delta(cpu_before, cpu_after, len(expected) * len(done)))
        if self.expiring_n:
            result["expiry"] = self.expiry_result(expiring_at)
        return result


def repeated_changes(notifies: set[tuple[str, str, bytes]]) -> int:
    """NOTIFYs (call-id, CSeq, step) that told a watcher a step it had
    already been told in another NOTIFY."""
    return len(notifies) - len({(call_id, step) for call_id, _, step in notifies})


def is_terminated(subscription_state: str) -> bool:
    """Whether a Subscription-State header value ends the subscription."""
    return subscription_state.split(";")[0].strip().lower() == "terminated"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run(port: int | list[int], watchers: int, expiring: int = 0, expiry_seconds: int = 20,
        package: str = "presence",
        **kwargs) -> dict:
    fanout = Fanout(port, watchers, expiring, expiry_seconds, package)
    try:
        return fanout.run(**kwargs)
    finally:
        fanout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, nargs="+",
                        help="the presence server's UDP port on 127.0.0.1 (several: nodes of one cluster)")
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--subscribe-rate", type=float, default=200.0)
    parser.add_argument("--expiring", type=int, default=0,
                        help="subscriptions whose single final NOTIFY is checked")
    parser.add_argument("--expiry-seconds", type=int, default=20)
    parser.add_argument("--package", choices=sorted(PACKAGES), default="presence")
    parser.add_argument("--expiry-period", type=float, default=10.0,
                        help="how often the server sweeps expired subscriptions")
    args = parser.parse_args()
    print(json.dumps(run(args.port, args.watchers, expiring=args.expiring, package=args.package,
                         expiry_seconds=args.expiry_seconds, steps=args.steps,
                         subscribe_rate=args.subscribe_rate, expiry_period=args.expiry_period),
                     indent=2))


if __name__ == "__main__":
    main()
