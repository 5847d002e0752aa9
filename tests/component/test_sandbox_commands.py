"""The sandbox's commands take the production path (issue 12): `SandboxWorld.command` writes the
`rollbackd.dev/command` annotation on the simulated Cloud Run, which publishes the audit entry a
Logging sink would (`simulations.audit_sink`) to the audit source; the same audit parser, read-back
and authorisation as live decide. Built from the pieces `daemon.bootstrap.run_sandbox` wires, on the
in-process bus and a virtual clock."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from actions.notify import LogNotifier
from daemon.bootstrap import SANDBOX_PRINCIPAL, build
from daemon.clock import VirtualClock
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.dispatch import Dispatcher
from daemon.ports import ListJournal
from daemon.telemetry import NullTelemetry
from daemon.sandbox import DEFAULT_START, SANDBOX_LOCATION, SANDBOX_PROJECT, SandboxWorld, load_services
from policies import load_default_policy
from simulations.sandbox_cloud import SimulatedCloudRun


class Sandbox:
    def __init__(self) -> None:
        policy = load_default_policy()
        self.clock = VirtualClock(DEFAULT_START)
        self.cloud = SimulatedCloudRun()
        self.journal = ListJournal()
        self.notes: list[dict[str, Any]] = []
        self.engine = build("sandbox", policy=lambda: policy, traffic=self.cloud,
                            notifier=LogNotifier(sink=self.notes.append), error_logs=_NoLogs(), journal=self.journal,
                            telemetry=NullTelemetry(),
                            clock=self.clock)
        self.dispatcher = Dispatcher(self.engine, clock=self.clock, traffic=self.cloud,
                                     own_principals=frozenset({SANDBOX_PRINCIPAL}), managed=lambda p, l, s: True,
                                     default_project=SANDBOX_PROJECT, default_location=SANDBOX_LOCATION)

        def publish(data: bytes, source: str) -> None:
            self.dispatcher.handle(data, source=source)

        self.cloud.audit_sink = lambda entry: publish(json.dumps(entry).encode(), "audit")
        self.world = SandboxWorld(load_services("good-canary", DEFAULT_START), self.cloud, publish, 7, None)

    def minutes(self, n: int) -> None:
        for _ in range(n):
            self.clock.advance_to(self.clock.now() + timedelta(minutes=1))
            self.world.minute(self.clock.now())
            self.engine.tick(self.clock.now())

    def status(self) -> str:
        return self.cloud.service("checkout").annotations.get(f"{P}status", "")


class _NoLogs:
    def capture(self, command: Any) -> Any:
        from daemon.ports import CapturedLogs

        return CapturedLogs(revision=command.revision, total=0, patterns=())


def test_a_sandbox_command_is_an_annotation_whose_audit_entry_pauses_the_rollout() -> None:
    sandbox = Sandbox()
    sandbox.minutes(3)
    assert sandbox.status() == "phase"
    command_id = sandbox.world.command("checkout", "pause", "looking", sandbox.clock.now())
    assert sandbox.status() == "held"
    annotations = sandbox.cloud.service("checkout").annotations
    assert annotations[f"{P}paused"] == "true" and command_id in annotations[f"{P}commands-handled"]
    commands = [r for r in sandbox.journal.records if r.get("type") == "command"]
    assert commands and commands[-1]["by"] == "sre@olympuscloud.ai" and commands[-1]["command_id"] == command_id


def test_a_sandbox_command_by_an_unlisted_principal_is_refused_and_notified() -> None:
    sandbox = Sandbox()
    sandbox.minutes(3)
    before = dict(sandbox.cloud.traffic_of("checkout"))
    sandbox.world.command("checkout", "abort", "mine", sandbox.clock.now(), principal="mallory@evil.example")
    assert sandbox.cloud.traffic_of("checkout") == before
    assert sandbox.status() == "phase"
    assert any("refused command abort" in json.dumps(note) for note in sandbox.notes)


def test_a_redelivered_command_audit_entry_is_not_run_twice() -> None:
    sandbox = Sandbox()
    sandbox.minutes(3)
    entries: list[dict[str, Any]] = []
    sink = sandbox.cloud.audit_sink
    sandbox.cloud.audit_sink = lambda entry: (entries.append(entry), sink(entry))  # type: ignore[func-returns-value]
    sandbox.world.command("checkout", "pause", "one", sandbox.clock.now())
    sandbox.world.command("checkout", "resume", "two", sandbox.clock.now() + timedelta(seconds=1))
    assert sandbox.status() in ("phase", "waiting")
    decisions = len([r for r in sandbox.journal.records if r.get("type") == "decision"])
    sandbox.dispatcher.handle(json.dumps(entries[0]).encode(), source="audit")  # the pause: no longer on it
    sandbox.dispatcher.handle(json.dumps(entries[1]).encode(), source="audit")  # the resume: already handled
    assert sandbox.status() in ("phase", "waiting"), "a redelivered pause was run again"
    assert len([r for r in sandbox.journal.records if r.get("type") == "decision"]) == decisions
