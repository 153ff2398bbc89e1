"""API keys: who may ask a served database (``serve``, ``mcp`` over HTTP).

Keys come from ``--api-key`` (repeatable) and from the environment variable
``TEXT2SQL_API_KEYS`` (several, separated by commas or whitespace), so a key need not appear
in a process listing. A request carries one as an OpenAI-style bearer token
(``Authorization: Bearer <key>``); it is compared with every configured key in constant time
(:func:`hmac.compare_digest`), and keys never appear in what is printed, logged or raised:
:func:`fingerprint` names one by a short hash.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from text2sql.io import DataError

ENV_VAR = "TEXT2SQL_API_KEYS"
MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class ApiKeys:
    """The keys a server accepts; empty: no key is asked for (loopback only, see
    :func:`check_bind`)."""

    keys: tuple[bytes, ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the keys."""
        if not self.keys:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        ok = False
        for key in self.keys:  # every key is compared: the time does not say which matched
            ok |= hmac.compare_digest(given, key)
        return ok


def load_keys(cli_keys: Iterable[str] = (), environ: dict[str, str] | None = None) -> ApiKeys:
    """The keys from ``--api-key`` values and ``TEXT2SQL_API_KEYS``; a too-short key is an
    error (it is not shown, only its length)."""
    environ = os.environ if environ is None else environ
    found = [k.strip() for k in cli_keys if k.strip()]
    found += environ.get(ENV_VAR, "").replace(",", " ").split()
    for key in found:
        if len(key) < MIN_KEY_CHARS:
            raise DataError(f"an API key ({fingerprint(key)}) has {len(key)} characters; use at "
                            f"least {MIN_KEY_CHARS}, e.g. python -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))'")
    return ApiKeys(tuple(dict.fromkeys(k.encode() for k in found)))


def fingerprint(key: str | bytes) -> str:
    """``key sha256:1a2b3c4d``: names a key in messages without showing it."""
    raw = key.encode() if isinstance(key, str) else key
    return f"key sha256:{hashlib.sha256(raw).hexdigest()[:8]}"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: ApiKeys, *, allow_open: bool, flag: str = "--allow-no-key"
               ) -> None:
    """Refuse to listen beyond this machine without a key, unless asked to explicitly."""
    if keys.required or is_loopback(host) or allow_open:
        return
    raise DataError(f"--host {host} answers other machines, and no API key is set: anyone who "
                    f"reaches it could ask every database it serves. Set one with --api-key KEY "
                    f"or {ENV_VAR}=KEY (clients send `Authorization: Bearer KEY`), or pass "
                    f"{flag} if this network is trusted")


__all__: Sequence[str] = ("ApiKeys", "ENV_VAR", "check_bind", "fingerprint", "is_loopback",
                          "load_keys")
