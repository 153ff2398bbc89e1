"""API keys (text2sql.runtime.keys): bearer tokens checked in constant time, never shown."""

from __future__ import annotations

import pytest

from text2sql.io import DataError
from text2sql.runtime.keys import ApiKeys, check_bind, fingerprint, is_loopback, load_keys

KEY, OTHER = "k" * 20, "o" * 24


def test_keys_from_the_command_line_and_the_environment():
    keys = load_keys([KEY], {"TEXT2SQL_API_KEYS": f"{OTHER}, {KEY}"})
    assert keys.required and len(keys.keys) == 2
    assert keys.accepts(f"Bearer {KEY}") and keys.accepts(f"bearer {OTHER}")
    for bad in (None, "", KEY, f"Basic {KEY}", "Bearer ", f"Bearer {KEY}x"):
        assert not keys.accepts(bad), bad
    assert ApiKeys().accepts(None)  # no key configured: nothing asked


def test_a_short_key_is_refused_without_showing_it():
    with pytest.raises(DataError) as e:
        load_keys(["short-key"], {})
    assert "short-key" not in str(e.value) and "9 characters" in str(e.value)
    assert fingerprint("short-key") in str(e.value)


def test_listening_beyond_loopback_needs_a_key_or_an_explicit_flag():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    check_bind("127.0.0.1", ApiKeys(), allow_open=False)
    check_bind("0.0.0.0", load_keys([KEY], {}), allow_open=False)
    check_bind("0.0.0.0", ApiKeys(), allow_open=True)
    with pytest.raises(DataError, match="--api-key KEY or TEXT2SQL_API_KEYS"):
        check_bind("0.0.0.0", ApiKeys(), allow_open=False)
