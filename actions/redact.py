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

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, also cut short (an example truncated at 500 characters has no END line).
    (re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     f"-----{MARK} PRIVATE KEY-----"),
    # Header values: everything after the header name up to the end of the line or the quote.
    (re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie)([\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"),
     rf"\1\2{MARK}"),
    (re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1\2{MARK}"),
    # URL userinfo: keep the user, mask the password (which may itself contain '@').
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:\"'<>]*):[^\s/?#\"'<>]+@"), rf"\1:{MARK}@"),
    # Named values: query parameters, assignments, headers, YAML and JSON keys.
    (re.compile(rf"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9_.\-]*[_.\-])?(?:{_NAMES}))"
                rf"([\"']?\s*[:=]\s*)({_VALUE})"), lambda m: m.group(1) + m.group(2) + _masked(m.group(3))),
    # Credential shapes.
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), MARK),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"), MARK),
    (re.compile(r"(?<![0-9A-Za-z/])1//[0-9A-Za-z_\-]{20,}"), MARK),
    (re.compile(r"\bGOCSPX-[0-9A-Za-z_\-]{10,}"), MARK),
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"), MARK),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), MARK),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), MARK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), MARK),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"), MARK),
)

# Every pattern above needs one of these in its match (case-insensitive), so a text without any
# has nothing to redact. JSON escaping (`\\t`, `\\"`) is allowed for, so the same check on a serialised
# record is safe: `might_hold_secret(json.dumps(record))` is False only if no string in it needs it.
_HINT = re.compile(rf"""(?i)PRIVATE KEY|authorization|cookie|(?:bearer|basic|digest)(?:\s|\\[trn])|://"""
                   rf"""|(?:{_NAMES})(?:\s|\\[trn"']|["'])*[:=]|aiza|ya29\.|1//|gocspx-"""
                   rf"""|(?-i:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{{16}})"""
                   rf"""|eyj|gh[pousr]_|github_pat_|xox[abposr]-|_live_|_test_""")


# A mapping key naming a secret: its string value is masked whole (`{"token": "abc"}` in a labels
# map has no `token=` for the text patterns to see).
_SECRET_KEY = re.compile(rf"(?i)(?:[A-Za-z0-9_.\-/]*[_.\-/])?"
                         rf"(?:{_NAMES}|(?:proxy-)?authorization|cookie|set-cookie)")


def _masked(value: str) -> str:
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
        return value[0] + MARK + value[0]
    return MARK


def might_hold_secret(text: str) -> bool:
    """False only when `redact(text)` would certainly return `text` unchanged (a cheap pre-check)."""
    return _HINT.search(text) is not None


def redact(text: str) -> str:
    """`text` with every credential the pattern set knows replaced by `[REDACTED]`."""
    if not text or _HINT.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)  # type: ignore[arg-type]
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
