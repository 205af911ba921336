"""HTTP Digest authentication (RFC 7616, MD5 with qop=auth) for the
built-in XCAP server, checked against the same credentials SIP uses
(Kamailio's subscriber table: ha1 = MD5(user:realm:password)).

Nonces are stateless, so every process and node accepts every other's:
an expiry time and an HMAC of it under a secret the nodes share.
"""

from __future__ import annotations

import hashlib
import hmac
import re

NONCE_LIFETIME = 300
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(a.encode(), b.encode())


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class Digest:
    def __init__(self, secret: bytes):
        self.secret = secret

    def _sign(self, expiry: int) -> str:
        return hmac.new(self.secret, str(expiry).encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, realm: str, now: float, stale: bool = False) -> str:
        """A WWW-Authenticate value."""
        expiry = int(now) + NONCE_LIFETIME
        nonce = f"{expiry:x}.{self._sign(expiry)}"
        return (f'Digest realm="{_quoted(realm)}", nonce="{nonce}", qop="auth", algorithm=MD5'
                + (", stale=true" if stale else ""))

    def _nonce_valid(self, nonce: str, now: float) -> bool:
        expiry_hex, _, signature = nonce.partition(".")
        try:
            expiry = int(expiry_hex, 16)
        except ValueError:
            return False
        return _same(signature, self._sign(expiry)) and now <= expiry

    def verify(self, header: str | None, method: str, realm: str, ha1_of, now: float):
        """(user, None) when the Authorization header proves the user, else
        (None, stale): stale is True for a good answer to an expired nonce."""
        if not header or not header.lower().startswith("digest "):
            return None, False
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(header[7:])}
        user, nonce = params.get("username", ""), params.get("nonce", "")
        if params.get("realm") != realm or not user or params.get("qop") != "auth" \
                or params.get("algorithm", "MD5").upper() != "MD5":
            return None, False
        ha1 = ha1_of(user, realm)
        if not ha1:
            return None, False
        ha2 = _md5(f"{method}:{params.get('uri', '')}")
        expected = _md5(":".join([ha1, nonce, params.get("nc", ""), params.get("cnonce", ""),
                                  "auth", ha2]))
        if not _same(expected, params.get("response", "")):
            return None, False
        if not self._nonce_valid(nonce, now):
            return None, True
        return user, False
