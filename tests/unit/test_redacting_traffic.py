"""RedactingTrafficController: every annotation mapping of a write command is redacted before the
wrapped controller sees it; reads and everything else pass through unchanged."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from actions.redacting_traffic import RedactingTrafficController, redact_annotations
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.core.commands import SetTraffic


@dataclass(frozen=True)
class SaveLike:
    """A command shaped like a state save with what rollbackd wrote last (newer controllers)."""
    service: str
    annotations: Mapping[str, str]
    expected_annotations: Mapping[str, str] | None = None


@dataclass
class Recorder:
    seen: list[Any] = field(default_factory=list)
    managed_label: tuple[str, str] = ("rollbackd", "enabled")

    def apply(self, command: Any) -> str:
        self.seen.append(command)
        return "applied"

    def save_state(self, command: Any) -> str:
        self.seen.append(command)
        return "saved"

    def list_services(self) -> list[str]:
        return ["checkout"]


def set_traffic(reason: str) -> SetTraffic:
    return SetTraffic(service="checkout", project="p", location="l", canary="c", baseline="b", canary_percent=0,
                      expected_canary_percent=5, reason=reason, decision_id="d",
                      annotations={f"{P}last-decision": f"rollback: {reason}", f"{P}phase": "1"})


def test_writes_are_redacted_reads_pass_through() -> None:
    inner = Recorder()
    controller = RedactingTrafficController(inner)
    assert controller.apply(set_traffic("aborted by sre (password=hunter22hunter)")) == "applied"
    written = inner.seen[-1].annotations
    assert written == {f"{P}last-decision": "rollback: aborted by sre (password=[REDACTED])", f"{P}phase": "1"}
    assert controller.save_state(SaveLike("checkout", {f"{P}hold-reason": "token=abc123456"},
                                          {f"{P}hold-reason": "token=abc123456"})) == "saved"
    assert inner.seen[-1].annotations == inner.seen[-1].expected_annotations == {f"{P}hold-reason": "token=[REDACTED]"}
    assert controller.list_services() == ["checkout"] and controller.managed_label == ("rollbackd", "enabled")


def test_clean_commands_are_passed_as_they_are() -> None:
    command = set_traffic("phase 1 passed")
    assert redact_annotations(command) is command
    assert not hasattr(RedactingTrafficController(object()), "save_state")
