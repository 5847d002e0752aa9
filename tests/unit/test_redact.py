"""The credential pattern set (`daemon.core.redact`): each kind of secret masked, ordinary text kept,
idempotent, and the cheap pre-check never skips a text that needs redacting."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.redact import MARK, might_hold_secret, redact, redact_json

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q2Zb3Kx9FAKEKEYMATERIALzz\n-----END PRIVATE KEY-----\n")
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNlY3JldC1ieXRlcw"

# (text, the secret that must be gone, text that must stay)
CASES = [
    ("GET /v1/orders?api_key=sk9Secret1 HTTP/1.1 500", "sk9Secret1", "GET /v1/orders?api_key="),
    ("https://maps.example/geo?key=K3yValue9&lang=en", "K3yValue9", "&lang=en"),
    ("callback?token=tok-7781-zz&state=ok", "tok-7781-zz", "&state=ok"),
    ("oauth?access_token=AT.998877.xyz", "AT.998877.xyz", "oauth?access_token="),
    ("refresh_token=rt-55aa-secret; next", "rt-55aa-secret", "next"),
    ("connect postgres://app:hunter2hunter@db.internal:5432/orders failed", "hunter2hunter",
     "postgres://app:"),
    ("redis://:p@ss:w0rd@cache:6379/0 timeout", "w0rd", "@cache:6379/0 timeout"),
    ("Authorization: Bearer abc.def-ghi_jkl012", "abc.def-ghi_jkl012", "Authorization: "),
    ("proxy said Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA", "proxy said"),
    ('headers={"authorization": "Bearer tok-123456789", "accept": "json"}', "tok-123456789", '"accept": "json"'),
    ("upstream replied 401 to bearer s3cr3tT0kenValue", "s3cr3tT0kenValue", "upstream replied 401"),
    ("Cookie: SID=31d4d96e407aad42; lang=en", "31d4d96e407aad42", "Cookie"),
    ("key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY in url", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
     " in url"),
    ("token ya29.a0AfH6SMBx-very-long_access.token in header", "ya29.a0AfH6SMBx", " in header"),
    ("refresh 1//0gLxJd8sZq5VXCgYIARAAGBASNwF-L9Ir9xyz7 stored", "1//0gLxJd8sZq5VXCgYIARAAGBASNwF", " stored"),
    ("client GOCSPX-1aB2c3D4e5F6g7H8i9J0kLmN leaked", "GOCSPX-1aB2c3D4e5F6g7H8i9J0kLmN", " leaked"),
    ("aws id AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "aws id"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "aws_secret_access_key="),
    (f"invalid jwt {JWT} rejected", JWT, " rejected"),
    (f"loaded key {PEM} ok", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", " ok"),
    (PEM[:70], "MIIEvQIBADANBg", ""),  # cut off mid-key (examples are truncated)
    ('{"type": "service_account", "private_key_id": "a1b2c3d4e5f6", "client_email": "x@y"}',
     "a1b2c3d4e5f6", '"client_email": "x@y"'),
    ("db password=correct-horse-battery user=app", "correct-horse-battery", "user=app"),
    ('PASSWORD="two words"', "two words", "PASSWORD="),
    ("secret: hunter22 in config", "hunter22", " in config"),
    ("X-Goog-Api-Key: gk-00112233", "gk-00112233", "X-Goog-Api-Key"),
    ("clientSecret=cs_987654321", "cs_987654321", "clientSecret="),
    ("signed url ...&X-Goog-Signature=0a1b2c3d4e5f&X-Goog-Date=20260101", "0a1b2c3d4e5f", "&X-Goog-Date="),
    ("gh token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 pushed", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
     " pushed"),
    ("slack xoxb-123456789012-abcdefABCDEF hook", "xoxb-123456789012-abcdefABCDEF", " hook"),
    ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc failed", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", " failed"),
]


@pytest.mark.parametrize("text,secret,kept", CASES, ids=[c[1][:16] for c in CASES])
def test_each_kind_of_secret_is_masked(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out, out
    assert MARK in out
    assert kept in out, out
    assert might_hold_secret(text)


ORDINARY = [
    "upstream request timeout after 5000ms calling inventory-svc",
    "database connection refused: pool exhausted (42 waiting)",
    "panic: nil pointer dereference in handler /checkout/123",
    "GET https://inventory.internal/v1/items/42 returned 503",
    "criteria pass: error_rate, latency_p99; key_metrics unchanged",
    "rollback: canary checkout-00042-vux 5xx ratio 8.0% > critical 2.0% (baseline 0.05%)",
    "ssh://git@github.com/shop/checkout.git fetch failed",
    "asia-northeast1 / europe-west1: 2 locations",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_messages_are_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("text", ["PAſSWORD=hunter22", "toKen=hunter22", "AUTHORİZATION: Bearer hunter22"])
def test_letters_regex_folds_to_ascii_still_trigger(text: str) -> None:
    assert "hunter22" not in redact(text)


def test_redact_json_masks_values_and_keys_and_keeps_the_shape() -> None:
    record = {"reason": "paused: password=hunter22", "n": 3, "ok": True, "none": None,
              "labels": {"token=abc123456": "x", "team": "AKIAIOSFODNN7EXAMPLE"},
              "criteria": [{"sentence": "Bearer zzzzzzzzzz1"}, 1.5]}
    out = redact_json(record)
    text = json.dumps(out)
    for secret in ("hunter22", "abc123456", "AKIAIOSFODNN7EXAMPLE", "zzzzzzzzzz1"):
        assert secret not in text
    assert out["n"] == 3 and out["ok"] is True and out["none"] is None and out["criteria"][1] == 1.5


def test_values_under_secret_keys_are_masked_whole() -> None:
    labels = {"token": "abc", "x-api-key": "k1", "db.password": "p1", "Authorization": "Basic xyz",
              "team": "payments", "key_metrics": "kept", "monkey": "kept2", "count": 3}
    out = redact_json({"labels": labels})["labels"]
    assert out == {"token": MARK, "x-api-key": MARK, "db.password": MARK, "Authorization": MARK,
                   "team": "payments", "key_metrics": "kept", "monkey": "kept2", "count": 3}
    assert might_hold_secret(json.dumps({"labels": labels}))


def test_serialised_precheck_allows_for_json_escapes() -> None:
    record = {"m": 'password\t= "hunter22"', "n": 'Bearer\ttok-1234567890', "p": "x\n" + PEM}
    assert might_hold_secret(json.dumps(record))
    assert "hunter22" not in json.dumps(redact_json(record))


SECRETS = st.sampled_from([c[0] for c in CASES])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SECRETS, TEXT), max_size=6))
def test_idempotent_and_precheck_is_a_superset(parts: list[str]) -> None:
    text = " ".join(parts)
    once = redact(text)
    assert redact(once) == once
    if once != text:
        assert might_hold_secret(text)
        assert might_hold_secret(json.dumps({"t": text}))
