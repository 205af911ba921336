"""Fetching pres-rules from an external XCAP server (RFC 4825), with a
timeout, conditional requests (If-None-Match), and a pause after a
failure so that a dead or slow server costs SIP processing at most one
bounded wait per pause, per process."""

from __future__ import annotations

import dataclasses
import http.client
import logging
import time

log = logging.getLogger("pa.xcap")

MAX_DOCUMENT_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Fetched:
    status: int          # 200, 304 or 404
    etag: str = ""
    body: bytes = b""


class XcapUnavailable(Exception):
    pass


class XcapClient:
    def __init__(self, server: str, timeout: float, pause: float = 10.0,
                 clock=time.monotonic):
        self.server = server        # host or host:port
        self.timeout = timeout
        self.pause = pause
        self.clock = clock
        self._failed_at: float | None = None

    def fetch(self, path: str, etag: str = "") -> Fetched:
        if self._failed_at is not None and self.clock() - self._failed_at < self.pause:
            raise XcapUnavailable(f"XCAP server {self.server} failed recently")
        host, _, port = self.server.partition(":")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=self.timeout)
        started = self.clock()
        try:
            headers = {"If-None-Match": f'"{etag}"'} if etag else {}
            # The path comes %-encoded (authorization.document_path).
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read(MAX_DOCUMENT_BYTES + 1)
            if self.clock() - started > self.timeout:
                raise TimeoutError("too slow")
        except (OSError, http.client.HTTPException) as e:
            self._failed_at = self.clock()
            raise XcapUnavailable(f"XCAP server {self.server}: {e}") from None
        finally:
            conn.close()
        if response.status in (200, 304, 404) and len(body) <= MAX_DOCUMENT_BYTES:
            self._failed_at = None
            return Fetched(response.status, (response.getheader("ETag") or "").strip('"'),
                           body if response.status == 200 else b"")
        self._failed_at = self.clock()
        raise XcapUnavailable(f"XCAP server {self.server} answered {response.status}")
