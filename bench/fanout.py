"""B2 fan-out: one presentity, N watchers, 20 sequential modifications;
B4 BLF: the same with Event: dialog (busy-lamp watchers of one extension,
its dialog state changed by PUBLISH as a proxy running pua_dialoginfo
does, a new dialog id per step).

One UDP socket plays all N watchers (N dialogs: distinct Call-IDs and From
tags, the same Contact) and the publisher.  Every NOTIFY is answered 200
at once.  For each modification (a PUBLISH with SIP-If-Match chained from
the previous 200's SIP-ETag and a note `bench-step-K`) we measure the time
from sending the PUBLISH until the last watcher received a NOTIFY carrying
that note; NOTIFYs of older steps are answered and otherwise ignored.

Standalone: python3 bench/fanout.py --port 35060 --watchers 200 [--package dialog]
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import time
from typing import Callable

import ports
import procs
import sipmsg

PRESENTITY = "sip:fanout@127.0.0.1"
RETRANSMIT_AFTER = 1.0
MAX_TRIES = 5


# What differs between the packages: (Event, Accept/Content-Type, what a
# NOTIFY with a document holds, the body of step K, its marker).
PACKAGES = {
    "presence": ("presence", "application/pidf+xml", b"<presence",
                 lambda k: sipmsg.pidf(PRESENTITY, f"bench-step-{k}"),
                 lambda k: f">bench-step-{k}<".encode()),
    "dialog": ("dialog", "application/dialog-info+xml", b"<dialog-info",
               lambda k: sipmsg.dialog_info(PRESENTITY, f"bench-step-{k}",
                                            "early" if k % 2 else "confirmed"),
               lambda k: f'"bench-step-{k}"'.encode()),
}


class Fanout:
    def __init__(self, port: int, watchers: int, package: str = "presence"):
        self.server = ("127.0.0.1", port)
        self.n = watchers
        self.event, self.media, self.document, self.body_of, self.marker_of = PACKAGES[package]
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
        self.last_marked_at = 0.0
        self.subscribed: set[str] = set()   # NOTIFY with a document received
        self.pub_reply: sipmsg.Message | None = None
        # SUBSCRIBEs not yet answered: call-id -> (message, sent at, tries).
        self.pending: dict[str, tuple[bytes, float, int]] = {}
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
                    data = self.sock.recv(65535, 0x40)  # MSG_DONTWAIT
                except BlockingIOError:
                    break
                self._handle(sipmsg.Message(data))

    def _handle(self, msg: sipmsg.Message) -> None:
        if not msg.is_response:
            if msg.method == "NOTIFY":
                self.sock.sendto(sipmsg.response(msg), self.server)
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
        if msg.body and self.document in msg.body:
            self.subscribed.add(call_id)
        if self.marker and self.marker in msg.body and call_id not in self.marked:
            self.marked.add(call_id)
            self.last_marked_at = time.monotonic()

    # -- publishing --------------------------------------------------------

    def publish(self, step: int) -> bytes:
        """Send step's PUBLISH (a modification once we hold an entity-tag);
        returns it for retransmission."""
        self.pub_cseq += 1
        self.pub_reply = None
        msg = sipmsg.publish(PRESENTITY, self.local, self.pub_call_id, self.pub_cseq,
                             self.body_of(step), etag=self.etag, event=self.event,
                             content_type=self.media)
        self.sock.sendto(msg, self.server)
        return msg

    def _await_publish(self, msg: bytes, deadline: float) -> None:
        sent, tries = time.monotonic(), 1
        while self.pub_reply is None and time.monotonic() < deadline:
            self._pump(min(deadline, time.monotonic() + 0.05), lambda: self.pub_reply is not None)
            if self.pub_reply is None and time.monotonic() - sent > RETRANSMIT_AFTER and tries < MAX_TRIES:
                self.sock.sendto(msg, self.server)
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
        start = time.monotonic()
        deadline = start + self.n / rate + timeout
        sent = 0
        while time.monotonic() < deadline:
            due = min(self.n, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                call_id = f"fo-{self.nonce}-{sent}"
                msg = sipmsg.request(
                    "SUBSCRIBE", PRESENTITY, self.local, call_id,
                    f"sip:watcher{sent}@127.0.0.1", f"w{sent}", PRESENTITY, 1,
                    [f"Contact: {self.contact}", f"Event: {self.event}", f"Accept: {self.media}",
                     "Expires: 600"])
                self.sock.sendto(msg, self.server)
                self.pending[call_id] = (msg, time.monotonic(), 1)
                sent += 1
            if sent == self.n and len(self.subscribed) >= self.n - len(self.failed_subscribe):
                break
            self._pump(time.monotonic() + 0.01)
            now = time.monotonic()
            for call_id, (msg, at, tries) in list(self.pending.items()):
                if now - at > RETRANSMIT_AFTER:
                    if tries >= MAX_TRIES:
                        del self.pending[call_id]
                    else:
                        self.sock.sendto(msg, self.server)
                        self.pending[call_id] = (msg, now, tries + 1)
        return len(self.subscribed)

    # -- the measurement ---------------------------------------------------

    def run(self, steps: int = 20, subscribe_rate: float = 200.0, step_timeout: float = 30.0,
            cpu: Callable[[], tuple[float, float]] | None = None) -> dict:
        result: dict = {"watchers": self.n, "steps": steps}
        drops = (ports.udp_drops(self.server[1]), ports.udp_drops(self.local[1]))
        first = self.publish(0)
        self._await_publish(first, time.monotonic() + 10)
        if not self._take_etag():
            result["error"] = f"initial PUBLISH: {self.pub_reply.first_line if self.pub_reply else 'no answer'}"
            return result
        subscribed = self.subscribe_all(subscribe_rate, timeout=15.0)
        result["subscribed"] = subscribed
        if subscribed < self.n:
            result["error"] = f"only {subscribed} of {self.n} watchers got their first NOTIFY"
            if not subscribed:
                return result
        expected = set(self.subscribed)
        latencies: list[float | None] = []
        cpu_before = cpu() if cpu else None
        started = time.monotonic()
        for k in range(1, steps + 1):
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
        self.marker = None
        self._pump(time.monotonic() + 0.5)   # answer late retransmissions
        done = [l for l in latencies if l is not None]
        result.update(
            latencies_ms=[None if l is None else round(l * 1000, 2) for l in latencies],
            failed_steps=steps - len(done),
            p50_ms=round(percentile(done, 50) * 1000, 2) if done else None,
            p99_ms=round(percentile(done, 99) * 1000, 2) if done else None,
            notifies_per_s=round(len(expected) * len(done) / (ended - started), 1) if done else None,
            notifies_received=self.notifies,
            # NOTIFYs beyond one per watcher and step: retransmissions.
            notifies_expected=len(expected) * (1 + len(latencies)),
            # Datagrams lost by the server's and by our socket (full buffers).
            server_udp_drops=ports.udp_drops(self.server[1]) - drops[0],
            client_udp_drops=ports.udp_drops(self.local[1]) - drops[1],
        )
        if cpu and done:
            result.update(procs.cpu_delta(cpu_before, cpu_after, len(expected) * len(done)))
        return result


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run(port: int, watchers: int, package: str = "presence", **kwargs) -> dict:
    fanout = Fanout(port, watchers, package)
    try:
        return fanout.run(**kwargs)
    finally:
        fanout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the presence server's UDP port on 127.0.0.1")
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--subscribe-rate", type=float, default=200.0)
    parser.add_argument("--package", choices=sorted(PACKAGES), default="presence")
    args = parser.parse_args()
    print(json.dumps(run(args.port, args.watchers, args.package, steps=args.steps,
                         subscribe_rate=args.subscribe_rate), indent=2))


if __name__ == "__main__":
    main()
