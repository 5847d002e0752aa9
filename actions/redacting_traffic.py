"""A traffic controller that writes no credential on the service: the `rollbackd.dev/*` annotation
values it is given (the last decision quotes a reason, the hold reason a command's) are redacted
(`actions.redact`) before the wrapped controller compares or writes them.

`daemon.live.build_traffic` wraps the Cloud Run controller in it. It is a wrapper rather than a
change inside the controller so that every annotation mapping a command carries (`annotations`, and
`expected_annotations` where a command has what rollbackd wrote last) goes through the same
redaction: stored values were written redacted, so comparisons stay like with like (redaction is
idempotent), and an unchanged record is never mistaken for someone else's change.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any, Callable, Mapping

from actions.redact import redact

# Controller methods that take a command carrying annotations to write.
WRITES = ("apply", "save_state")


def redact_annotations(command: Any) -> Any:
    """`command` with the values of each of its `*annotations` mappings redacted."""
    if not is_dataclass(command) or isinstance(command, type):
        return command
    changes = {}
    for f in fields(command):
        value = getattr(command, f.name)
        if f.name.endswith("annotations") and isinstance(value, Mapping):
            redacted = {k: redact(v) if isinstance(v, str) else v for k, v in value.items()}
            if redacted != dict(value):
                changes[f.name] = redacted
    return replace(command, **changes) if changes else command


class RedactingTrafficController:
    """Delegates everything to `inner`; `apply`/`save_state` get commands with redacted annotations."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def inner(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in WRITES and callable(attribute):
            method: Callable[..., Any] = attribute

            def write(command: Any, *args: Any, **kwargs: Any) -> Any:
                return method(redact_annotations(command), *args, **kwargs)
            return write
        return attribute


__all__ = ["RedactingTrafficController", "redact_annotations"]
