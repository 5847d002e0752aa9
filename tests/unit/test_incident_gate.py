"""The runbook's pre-deploy gate, "No P0/P1 incidents currently active" (issue 11, item 9): an
incident the policy calls blocking, on any resource or none, stops every promotion and keeps new
rollouts at their first step; rollbacks are never blocked; the gate is saved on the services so a
restart keeps it. Through the real Engine with the simulated Cloud Run (the same rules as live)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from daemon.clock import VirtualClock
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.core.events import ActionApplied, Alert, Command, Deploy, Tick
from daemon.bootstrap import build
from daemon.engine import Engine
from policies import load_default_policy
from simulations.sandbox_cloud import SimulatedCloudRun

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
POLICY = load_default_policy()
SRE = "sre@olympuscloud.ai"


def engine() -> tuple[Engine, SimulatedCloudRun, VirtualClock]:
    clock = VirtualClock(T0)
    cloud = SimulatedCloudRun()
    return build("replay", policy=lambda: POLICY, traffic=cloud, clock=clock), cloud, clock


def p0(state: str, at: datetime, **extra: object) -> Alert:
    return Alert(time=at, service=None, revision=None, incident_id="inc-db", state=state,  # type: ignore[arg-type]
                 policy_name="primary database down", **extra)  # type: ignore[arg-type]


def test_policy_decides_which_incidents_block() -> None:
    alerts = POLICY.alerts
    assert alerts.blocks("critical", {})
    assert alerts.blocks("warning", {"priority": "P1"})
    assert not alerts.blocks("warning", {"priority": "p3"})
    assert not alerts.blocks("", {})


def test_a_project_incident_holds_new_rollouts_at_their_first_step_and_they_start_after() -> None:
    eng, cloud, clock = engine()
    eng.submit(p0("open", T0, severity="critical"))
    out = eng.submit(Deploy(time=T0 + timedelta(minutes=1), service="api", revision="api-2", baseline="api-1",
                            project="p", location="l"))
    assert out.decisions[-1].action == "hold" and "blocking incident" in out.decisions[-1].reason
    assert cloud.service("api").annotations[f"{P}blocking-incidents"] == "inc-db"
    assert cloud.traffic_of("api").get("api-2", 0) == 0
    clock.advance_to(T0 + timedelta(minutes=5))
    eng.tick(T0 + timedelta(minutes=5))
    assert cloud.traffic_of("api").get("api-2", 0) == 0, "started during a P0"
    eng.submit(p0("closed", T0 + timedelta(minutes=6)))
    clock.advance_to(T0 + timedelta(minutes=7))
    eng.tick(T0 + timedelta(minutes=7))
    assert cloud.traffic_of("api")["api-2"] == 5
    assert f"{P}blocking-incidents" not in cloud.service("api").annotations


def test_an_incident_never_blocks_a_rollback() -> None:
    eng, cloud, clock = engine()
    eng.submit(Deploy(time=T0, service="api", revision="api-2", baseline="api-1", project="p", location="l"))
    eng.submit(p0("open", T0 + timedelta(minutes=1), policy_labels=(("priority", "P0"),)))
    eng.submit(Command(time=T0 + timedelta(minutes=2), service="api", action="abort", by=SRE))
    assert cloud.traffic_of("api").get("api-2", 0) == 0
    assert eng.state_of("api").rollout.status.value == "rolled-back"


def test_the_gate_survives_a_restart() -> None:
    eng, cloud, clock = engine()
    eng.submit(Deploy(time=T0, service="api", revision="api-2", baseline="api-1", project="p", location="l"))
    eng.submit(p0("open", T0 + timedelta(minutes=1), severity="critical"))
    fresh = build("replay", policy=lambda: POLICY, traffic=cloud, clock=clock)
    fresh.read_back(cloud.list_services(), "restore")
    assert fresh.blocking == {"inc-db": "inc-db"}
    clock.advance_to(T0 + timedelta(minutes=30))
    fresh.tick(T0 + timedelta(minutes=30))
    assert cloud.traffic_of("api")["api-2"] == 5, "promoted during a P0 after a restart"
