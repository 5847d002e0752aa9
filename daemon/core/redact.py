"""Credential redaction: the one pattern set every text rollbackd writes out goes through.

Pure (no google imports, no I/O). Called where text leaves rollbackd: the error-log capture
(`actions.error_logs`, before examples leave it), notifications (`actions.notify`), the decision log
(`daemon.adapters.decision_log`), the journal (`daemon.adapters.journal`), the annotations the
traffic controller writes (`actions.cloud_run`), `rollbackd status` and the HTML report.

What is masked (the secret part becomes `[REDACTED]`; the name or scheme around it stays, so a
reader still sees *that* a credential was there):
- `Authorization:` / `Proxy-Authorization:` / `Cookie:` header values, `Bearer <token>` anywhere;
- passwords in URLs (`scheme://user:PASS@host`);
- values of `api_key=`, `key=`, `token=`, `access_token=`, `password=`, `secret=`, `client_secret:`,
  `"private_key_id": "..."` and the like, as query parameters, assignments, headers or JSON;
- shapes that are credentials whatever surrounds them: Google API keys (`AIza...`), OAuth access
  tokens (`ya29.`), refresh tokens (`1//...`), OAuth client secrets (`GOCSPX-`), AWS access key ids
  (`AKIA...`), JWTs (`eyJ...eyJ...`), PEM private key blocks (even cut off), GitHub, Slack and
  Stripe tokens.
It errs toward masking: `key=user-42` loses its value too. Redaction is idempotent.
"""
from __future__ import annotations

import re
from typing import Any

MARK = "[REDACTED]"

# Names whose value is a secret. A name may carry a prefix ending in a separator (`x-goog-api-key`,
# `aws_secret_access_key`, `db.password`); plain words around it (`monkey`, `tokens`) do not count.
_NAMES = (r"api[_-]?key|apikey|access[_-]?key(?:[_-]?id)?|secret[_-]?(?:access[_-]?)?key"
          r"|private[_-]?key(?:[_-]?id)?"
          r"|(?:access|refresh|id|auth|bearer|session|csrf|xsrf|api|client|app|security)[_-]?token"
          r"|client[_-]?secret|secret|token|key|password|passwd|pwd|passphrase|credentials?"
          r"|signature|sig|auth|session[_-]?id|sessionid|sid")
# A value: quoted, or up to a delimiter; never a JSON object; `[REDACTED]` whole (idempotence).
_VALUE = r"""(?:"[^"\r\n]*"|'[^'\r\n]*'|\[REDACTED\]|(?!\{)[^\s"'&,;<>)}\]\\]+)"""

# Each rule: (pattern, replacement, triggers). A rule runs only on a text whose lower-cased form
# holds one of its triggers (substring tests run at C speed; these regexes cost ~1 µs a character
# when they must scan). Every match of a rule contains one of its triggers, in any case.
_NAME_TRIGGERS = ("key", "token", "secret", "passw", "pwd", "passphrase", "credential", "signature", "auth",
                  "session")
_Rule = tuple[re.Pattern[str], Any, tuple[str, ...]]
_RULES: tuple[_Rule, ...] = (
    # PEM private keys, also cut short (an example truncated at 500 characters has no END line).
    (re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     f"-----{MARK} PRIVATE KEY-----", ("private key",)),
    # Header values: everything after the header name up to the end of the line or the quote.
    (re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie)([\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"),
     rf"\1\2{MARK}", ("authorization", "cookie")),
    (re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1\2{MARK}",
     ("bearer", "basic", "digest")),
    # URL userinfo: keep the user, mask the password (which may itself contain '@').
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:\"'<>]*):[^\s/?#\"'<>]+@"), rf"\1:{MARK}@", ("://",)),
    # Named values: query parameters, assignments, headers, YAML and JSON keys. The match starts
    # where a name can start (not inside a word), so a long text is not rescanned at every letter.
    (re.compile(rf"(?i)(?<![A-Za-z0-9_.\-])((?:[A-Za-z0-9_.\-]*[_.\-])?(?:{_NAMES}))"
                rf"([\"']?\s*[:=]\s*)({_VALUE})"), lambda m: m.group(1) + m.group(2) + _masked(m.group(3)),
     _NAME_TRIGGERS + ("sig",)),
    # Credential shapes.
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), MARK, ("aiza",)),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"), MARK, ("ya29.",)),
    (re.compile(r"(?<![0-9A-Za-z/])1//[0-9A-Za-z_\-]{20,}"), MARK, ("1//",)),
    (re.compile(r"\bGOCSPX-[0-9A-Za-z_\-]{10,}"), MARK, ("gocspx-",)),
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"), MARK,
     ("<aws>",)),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), MARK, ("eyj",)),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), MARK,
     ("<github>",)),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), MARK, ("xox",)),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"), MARK, ("_live_", "_test_")),
)
# Fewer, longer substrings scan faster: 'auth' covers 'authorization'. Some triggers are gates that
# need a regex (each has a literal prefix, so it is a fast scan too).
_TRIGGERS = tuple(sorted({t for _, _, triggers in _RULES for t in triggers}
                         - {"sig", "sid", "authorization", "<aws>", "<github>"}))
_GATES = {
    # `sig` and `sid` are too common inside words ("sigma", "inside") to trigger alone: only as a
    # name followed by what can separate it from a value, JSON escapes included (`sid\t=`, `"sig":`).
    "sig": re.compile(r"s(?:ig|id)[\"'\s\\:=]"),
    "<github>": re.compile(r"gh[pousr]_|github_pat_"),
}
_AWS_GATE = re.compile(r"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)")  # case-sensitive, on the text itself


def _gate(trigger: str, low: str, text: str) -> bool:
    if trigger == "<aws>":
        return _AWS_GATE.search(text) is not None
    gate = _GATES.get(trigger)
    return gate.search(low) is not None if gate is not None else trigger in low


# Letters that (?i) matches to ASCII ones but lower() leaves alone (Python re's documented four:
# 'İ' lowers to 'i' + U+0307), so a trigger test on lower() text agrees with the regexes.
_FOLD = str.maketrans({"\u0131": "i", "\u017f": "s", "\u212a": "k", "\u0307": None})


def _lower(text: str) -> str:
    return text.lower().translate(_FOLD) if not text.isascii() else text.lower()


def _triggered(low: str, text: str) -> bool:
    return (any(t in low for t in _TRIGGERS) or _AWS_GATE.search(text) is not None
            or any(gate.search(low) is not None for gate in _GATES.values()))


# A mapping key naming a secret: its string value is masked whole (`{"token": "abc"}` in a labels
# map has no `token=` for the text patterns to see).
_SECRET_KEY = re.compile(rf"(?i)(?:[A-Za-z0-9_.\-/]*[_.\-/])?"
                         rf"(?:{_NAMES}|(?:proxy-)?authorization|cookie|set-cookie)")


def _masked(value: str) -> str:
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
        return value[0] + MARK + value[0]
    return MARK


def might_hold_secret(text: str) -> bool:
    """False only when `redact(text)` would certainly return `text` unchanged (a cheap pre-check).
    JSON escaping keeps every trigger intact, so `might_hold_secret(json.dumps(record))` is False
    only if no string in the record needs redacting."""
    return _triggered(_lower(text), text)


def redact(text: str) -> str:
    """`text` with every credential the pattern set knows replaced by `[REDACTED]`."""
    if not text:
        return text
    low = _lower(text)
    if not _triggered(low, text):
        return text
    for pattern, replacement, triggers in _RULES:
        if any(_gate(t, low, text) for t in triggers):
            text = pattern.sub(replacement, text)
    return text


def redact_json(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings, numbers) with every string,
    mapping keys included, redacted, and the string value of a key that names a secret (`token`,
    `x-api-key`, `db.password`, `authorization`...) masked whole. Other values are kept."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k:
                MARK if isinstance(k, str) and isinstance(v, str) and v and _SECRET_KEY.fullmatch(k)
                else redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value


__all__ = ["MARK", "might_hold_secret", "redact", "redact_json"]
