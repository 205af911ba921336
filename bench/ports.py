"""Free loopback ports inside the ranges the benchmark may use."""

from __future__ import annotations

import random
import socket

MARIADB_PORTS = (34000, 34999)
KAMAILIO_PORTS = (35000, 35999)


def free_port(lo: int, hi: int, avoid: set[int] = frozenset()) -> int:
    """A port of [lo, hi] free for both UDP and TCP on 127.0.0.1."""
    candidates = [p for p in range(lo, hi + 1) if p not in avoid]
    random.shuffle(candidates)
    for port in candidates[:200]:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port in {lo}-{hi}")


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP sockets bound to
    127.0.0.1:`port` (full receive buffer): a server or client that could
    not keep up loses messages there, and the peer retransmits."""
    local = f"0100007F:{port:04X}"
    total = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local:
                total += int(fields[-1])
    return total
