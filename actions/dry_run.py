"""The dry-run traffic controller: reads through to the real one, never writes.

`daemon.bootstrap` wraps the chosen controller in it under `--dry-run` (and the global kill switch
can do the same at run time). Decisions are still made and logged; the traffic changes and revision
deletions they would cause are recorded in `would_have` instead of being sent, so a test can prove
with the Cloud Run fake's request log that no UpdateService or DeleteRevision ever left the process.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from daemon.core.commands import DeleteRevision, SaveState, SetTraffic
from daemon.ports import ApplyResult, ServiceView, TrafficController


@dataclass(frozen=True, slots=True)
class WouldHave:
    """One action withheld: what, on which service, and how it differed from the live state."""

    kind: str  # "set-traffic" | "delete-revision"
    service: str
    command: Any
    current: dict[str, int] = field(default_factory=dict)  # {revision: percent} when it was read
    note: str = ""


class DryRunTrafficController:
    """A TrafficController whose writes are recorded, not performed."""

    def __init__(self, inner: TrafficController) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.would_have: list[WouldHave] = []

    def list_services(self) -> list[ServiceView]:
        return self._inner.list_services()

    def get_service(self, project: str, location: str, service: str) -> ServiceView:
        return self._inner.get_service(project, location, service)

    def apply(self, command: SetTraffic) -> ApplyResult:
        """Read the service to say what would change; report changed=False (nothing was sent)."""
        try:
            view: ServiceView | None = self._inner.get_service(command.project, command.location, command.service)
        except Exception as exc:  # noqa: BLE001 - a dry run reports a failed read, it does not act on it
            self._record(WouldHave("set-traffic", command.service, command, note=f"read failed: {exc}"))
            raise
        current = _split(view) if view is not None else {}
        wanted = {command.canary: command.canary_percent}
        if command.baseline != command.canary:
            wanted[command.baseline] = 100 - command.canary_percent
        wanted = {r: p for r, p in wanted.items() if p}
        note = "already as wanted" if current == wanted else f"would set {wanted}"
        self._record(WouldHave("set-traffic", command.service, command, current, note))
        return ApplyResult(changed=False, service=view)

    def save_state(self, command: SaveState) -> ApplyResult:
        """A dry run writes nothing on the service, its record included."""
        self._record(WouldHave("save-state", command.service, command, note="would write the rollbackd record"))
        return ApplyResult(changed=False)

    def delete_revision(self, command: DeleteRevision) -> None:
        self._record(WouldHave("delete-revision", command.service, command, note=f"would delete {command.revision}"))

    def _record(self, item: WouldHave) -> None:
        with self._lock:
            self.would_have.append(item)


def _split(view: ServiceView) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in view.traffic:
        if entry.percent:
            out[entry.revision] = out.get(entry.revision, 0) + entry.percent
    return out
