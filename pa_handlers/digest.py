"""HTTP Digest authentication (RFC 7616, MD5 with qop=auth) for the
built-in XCAP server, checked against the same credentials SIP uses
(Kamailio's subscriber table: ha1 = MD5(user:realm:password)).

Nonces are stateless, so every process and node accepts every other's:
an expiry time and a random salt, with an HMAC of both under a secret the
nodes share.  What
cannot be stateless is the replay check: a (nonce, nonce-count) pair
proves one request only, so its first use is recorded where every node
sees it (the caller's `first_use`) until the nonce expires.  The `uri`
the answer was computed for must be the request's own target.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import urllib.parse

NONCE_LIFETIME = 300
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_NONCE_COUNT = re.compile(r"[0-9a-fA-F]{8}")
# Expiry and salt as challenge() writes them: one spelling per nonce, so
# one replay record.
_STAMP = re.compile(r"[1-9a-f][0-9a-f]{0,15}\.[0-9a-f]{16}")


class WrongTarget(Exception):
    """Credentials computed for another request-target (RFC 2617 3.2.2.5:
    400 Bad Request)."""


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(a.encode(), b.encode())


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _names_target(uri: str, target: str) -> bool:
    """Whether the digest-uri is the request-target, as sent or in absolute
    form (RFC 7616 3.4.6)."""
    if uri == target:
        return True
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    return parts.path + (f"?{parts.query}" if parts.query else "") == target


class Digest:
    def __init__(self, secret: bytes):
        self.secret = secret

    def _sign(self, stamp: str) -> str:
        return hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, realm: str, now: float, stale: bool = False) -> str:
        """A WWW-Authenticate value."""
        # The salt makes each challenge's nonce its own: two clients
        # challenged in the same second must not share nonce-counts.
        stamp = f"{int(now) + NONCE_LIFETIME:x}.{secrets.token_hex(8)}"
        nonce = f"{stamp}.{self._sign(stamp)}"
        return (f'Digest realm="{_quoted(realm)}", nonce="{nonce}", qop="auth", algorithm=MD5'
                + (", stale=true" if stale else ""))

    def _expiry(self, nonce: str) -> int | None:
        """The expiry a nonce of ours carries; None for a forged one."""
        stamp, _, signature = nonce.rpartition(".")
        if not _STAMP.fullmatch(stamp):
            return None
        return int(stamp.partition(".")[0], 16) if _same(signature, self._sign(stamp)) else None

    def verify(self, header: str | None, method: str, target: str, realm: str, ha1_of,
               now: float, first_use):
        """(user, False) when the Authorization header proves the user for
        this request, else (None, stale): stale is True for a good answer to
        an expired nonce or to a (nonce, nonce-count) already used.
        `first_use(nonce, nc, expiry)` records a use and says whether it was
        the first.  Raises WrongTarget for credentials of another uri."""
        if not header or not header.lower().startswith("digest "):
            return None, False
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(header[7:])}
        user, nonce = params.get("username", ""), params.get("nonce", "")
        nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
        if params.get("realm") != realm or not user or params.get("qop") != "auth" \
                or params.get("algorithm", "MD5").upper() != "MD5" \
                or not _NONCE_COUNT.fullmatch(nc) or not cnonce:
            return None, False
        if not _names_target(params.get("uri", ""), target):
            raise WrongTarget(params.get("uri", ""))
        ha1 = ha1_of(user, realm)
        if not ha1:
            return None, False
        ha2 = _md5(f"{method}:{params['uri']}")
        expected = _md5(":".join([ha1, nonce, nc, cnonce, "auth", ha2]))
        if not _same(expected, params.get("response", "")):
            return None, False
        expiry = self._expiry(nonce)
        if expiry is None:
            return None, False
        if now > expiry or not first_use(nonce, int(nc, 16), expiry):
            return None, True
        return user, False
