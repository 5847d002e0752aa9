"""Who may command rollbackd: one pure rule for every path (per-service commands in `step`, the
global kill switch in the engine, the policy loader's check of `commands.*_principals`).

A principal is the verified email Google puts in an Admin Activity audit entry
(`protoPayload.authenticationInfo.principalEmail`), never text from a message body. An allow-list
entry is either a whole email (`alice@example.com`) or a whole domain written `*@example.com`. No
shell patterns, no regular expressions: the principal is parsed strictly as `local@domain` (one
`@`, no spaces, quotes, parentheses, angle brackets or commas) and compared whole, so
`mallory@evil.example (x)@olympuscloud.ai` matches nothing. Local parts compare exactly, domains
case-insensitively (DNS names are case-insensitive; Google lower-cases them anyway).
"""
from __future__ import annotations

import re
from typing import Iterable

# What Google's principal emails look like: users, groups' members and service accounts
# (name@project.iam.gserviceaccount.com). Deliberately narrower than RFC 5322.
_LOCAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._+\-]{0,62}[A-Za-z0-9_+\-])?", re.ASCII)
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}", re.ASCII)
MAX_EMAIL_CHARS = 254


def parse_email(text: str) -> tuple[str, str] | None:
    """(local part, lower-cased domain) of a plain email address, or None if it is not exactly one."""
    if not isinstance(text, str) or len(text) > MAX_EMAIL_CHARS or text.count("@") != 1:
        return None
    local, domain = text.split("@")
    if not _LOCAL.fullmatch(local) or ".." in local or not _DOMAIN.fullmatch(domain):
        return None
    return local, domain.lower()


def entry_problem(entry: str) -> str | None:
    """Why an allow-list entry is not accepted, or None: a whole email or `*@domain`."""
    if not isinstance(entry, str):
        return "expected a string"
    if entry.startswith("*@"):
        if parse_email("x" + entry[1:]) is None:
            return f"{entry!r}: '*@' must be followed by a plain domain such as example.com"
        return None
    if parse_email(entry) is None:
        hint = " (shell patterns are no longer accepted: write a whole email or '*@domain')" \
            if any(c in entry for c in "*?[]") else ""
        return f"{entry!r} is not a plain email address or '*@domain'{hint}"
    return None


def principal_matches(principal: str, allowed: Iterable[str]) -> bool:
    """Is this verified principal in the allow-list? False for anything that is not one plain email."""
    parsed = parse_email(principal)
    if parsed is None:
        return False
    local, domain = parsed
    for entry in allowed:
        if entry.startswith("*@"):
            if domain == entry[2:].lower():
                return True
            continue
        wanted = parse_email(entry)
        if wanted is not None and wanted == (local, domain):
            return True
    return False


def may_command_service(principal: str, allowed: Iterable[str]) -> bool:
    """A per-service command (pause, resume, abort, promote). IAM already authorised the writer
    (`run.services.update` on that service); a non-empty allow-list narrows it further."""
    allowed = tuple(allowed)
    if parse_email(principal) is None:
        return False
    return not allowed or principal_matches(principal, allowed)


def may_flip_kill_switch(principal: str, allowed: Iterable[str]) -> bool:
    """The global kill switch: IAM on one service cannot authorise a stop of every service, so the
    principal must be listed explicitly; an empty list means nobody."""
    return principal_matches(principal, tuple(allowed))


__all__ = ["entry_problem", "may_command_service", "may_flip_kill_switch", "parse_email", "principal_matches"]
