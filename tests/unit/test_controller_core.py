"""The controller's rules in the pure core (issue 11): every state change saved on the service, a
rollback as a goal, the superseded canary's traffic, a late deploy's phase timer, incidents that
predate the canary, and the durable record read back. No I/O: `step()` and the pure rules only."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.core.commands import SaveState, SetTraffic
from daemon.core.events import ActionApplied, ActionFailed, Alert, Command, Deploy, Resync, Tick
from daemon.core.outcome import record_of
from daemon.core.ownership import Split, classify_split, record_changed_by_others
from daemon.core.persist import service_state_from_annotations
from daemon.core.rollout import ServiceState, Status
from daemon.core.step import step
from policies import load_default_policy

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)  # a Tuesday: no freeze window
POLICY = load_default_policy()
SRE = "sre@olympuscloud.ai"


def deploy(at: datetime = T0, revision: str = "api-2", baseline: str = "api-1") -> Deploy:
    return Deploy(time=at, service="api", revision=revision, baseline=baseline, project="p", location="l")


def started(now: datetime | None = None) -> ServiceState:
    result = step(ServiceState(service="api"), deploy(), POLICY, now=now)
    applied = step(result.state, ActionApplied(time=T0, service="api", action="set-traffic",
                                               decision_id=result.decisions[-1].decision_id, canary_percent=5), POLICY)
    return applied.state


def test_a_late_deploy_gets_its_full_first_phase() -> None:
    """Handled 3 h after the audit entry: the phase timer starts when traffic does."""
    late = T0 + timedelta(hours=3)
    result = step(ServiceState(service="api"), deploy(), POLICY, now=late)
    rollout = result.state.rollout
    assert rollout is not None and rollout.phase_started_at == late
    assert result.decisions[-1].time == late
    assert rollout.started_at == T0  # still the deploy's own time, for "from before the rollout"


def test_a_pause_is_saved_on_the_service() -> None:
    state = started()
    result = step(state, Command(time=T0 + timedelta(minutes=1), service="api", action="pause", by=SRE), POLICY)
    saves = [c for c in result.commands if isinstance(c, SaveState)]
    assert len(saves) == 1
    assert saves[0].annotations[f"{P}paused"] == "true" and saves[0].annotations[f"{P}status"] == "held"
    assert saves[0].expected_annotations is not None and saves[0].expected_annotations[f"{P}status"] == "phase"


def test_a_hold_without_a_traffic_change_is_saved_and_an_unchanged_state_is_not() -> None:
    state = started()
    result = step(state, Tick(time=T0 + timedelta(seconds=30)), POLICY)
    assert not result.commands, "nothing changed, nothing to write"


def test_a_failed_rollback_is_retried_never_abandoned() -> None:
    state = started()
    abort = step(state, Command(time=T0 + timedelta(minutes=1), service="api", action="abort", by=SRE), POLICY)
    assert abort.state.rollout.status is Status.ROLLING_BACK
    traffic = [c for c in abort.commands if isinstance(c, SetTraffic)]
    assert traffic and traffic[0].canary_percent == 0 and traffic[0].expected_canary_percent == 5
    failed = step(abort.state, ActionFailed(time=T0 + timedelta(minutes=2), service="api", action="set-traffic",
                                            error="UNAVAILABLE", decision_id=traffic[0].decision_id), POLICY)
    rollout = failed.state.rollout
    assert rollout.status is Status.ROLLING_BACK and rollout.rollback_attempts == 1
    assert failed.next_wakeup == rollout.retry_at
    early = step(failed.state, Tick(time=rollout.retry_at - timedelta(seconds=1)), POLICY)
    assert not early.commands
    retry = step(failed.state, Tick(time=rollout.retry_at), POLICY)
    again = [c for c in retry.commands if isinstance(c, SetTraffic)]
    assert again and again[0].canary_percent == 0 and again[0].expected_canary_percent == 5
    done = step(retry.state, ActionApplied(time=rollout.retry_at, service="api", action="set-traffic",
                                           decision_id=again[0].decision_id, canary_percent=0), POLICY)
    assert done.state.rollout.status is Status.ROLLED_BACK
    saves = [c for c in done.commands if isinstance(c, SaveState)]
    assert saves and saves[0].annotations[f"{P}status"] == "rolled-back"


def test_a_failed_promotion_halts_with_the_traffic_it_really_has() -> None:
    state = started()
    promote = step(state, Command(time=T0 + timedelta(minutes=1), service="api", action="promote", by=SRE), POLICY)
    traffic = [c for c in promote.commands if isinstance(c, SetTraffic)][0]
    failed = step(promote.state, ActionFailed(time=T0 + timedelta(minutes=2), service="api", action="set-traffic",
                                              error="PERMISSION_DENIED", decision_id=traffic.decision_id,
                                              canary_percent_before=5), POLICY)
    halt = failed.decisions[-1]
    assert halt.action == "halt" and halt.canary_percent_before == 5 and halt.canary_percent_after == 5


def test_a_redeploy_may_take_the_superseded_canarys_share() -> None:
    state = started()
    redeploy = step(state, deploy(T0 + timedelta(minutes=5), revision="api-3", baseline="api-2"), POLICY)
    rollout = redeploy.state.rollout
    assert rollout.canary == "api-3" and rollout.baseline == "api-1", "the baseline stays the stable revision"
    command = [c for c in redeploy.commands if isinstance(c, SetTraffic)][0]
    assert command.released == ("api-2",)
    verdict = classify_split({"api-1": 75, "api-2": 25}, command)
    assert verdict.split is Split.OURS
    human = classify_split({"api-1": 75, "api-9": 25}, command)
    assert human.split is Split.HUMAN and "api-9" in human.reason


def test_classify_split() -> None:
    command = SetTraffic(service="api", project="p", location="l", canary="c", baseline="b", canary_percent=25,
                         expected_canary_percent=5, annotations={}, reason="", decision_id="x")
    assert classify_split({"b": 75, "c": 25}, command).split is Split.AS_WANTED
    assert classify_split({"b": 95, "c": 5}, command).split is Split.OURS
    assert classify_split({"b": 70, "c": 30}, command).split is Split.HUMAN
    assert classify_split({"b": 90, "c": 5, "d": 5}, command).split is Split.HUMAN


def test_an_incident_open_before_the_canary_blocks_its_phases() -> None:
    idle = step(ServiceState(service="api", project="p", location="l"),
                Alert(time=T0 - timedelta(minutes=5), service="api", revision=None, incident_id="inc-1",
                      state="open"), POLICY)
    assert idle.state.open_alerts == {"inc-1"}
    assert any(isinstance(c, SaveState) and c.annotations[f"{P}open-alerts"] == "inc-1" for c in idle.commands)
    result = step(idle.state, deploy(), POLICY)
    assert result.state.rollout.open_alerts == {"inc-1"}


def test_record_changed_by_others() -> None:
    believed = {f"{P}status": "phase", f"{P}phase": "1"}
    wanted = {f"{P}status": "phase", f"{P}phase": "2"}
    assert not record_changed_by_others(believed, believed, wanted)
    assert not record_changed_by_others(wanted, believed, wanted)
    assert record_changed_by_others({f"{P}status": "held", f"{P}phase": "1"}, believed, wanted)
    # An annotation a human adds under the prefix is not part of the record.
    assert not record_changed_by_others({**believed, f"{P}note": "hi"}, believed, wanted)


def test_resync_adopts_another_replicas_pause_and_keeps_the_evidence() -> None:
    local = started()
    paused = step(local, Command(time=T0 + timedelta(minutes=1), service="api", action="pause", by=SRE), POLICY)
    record = record_of(paused.state)
    found = service_state_from_annotations("api", "p", "l", {k: v for k, v in record.items() if v}, POLICY, now=T0 + timedelta(minutes=2))
    result = step(local, Resync(time=T0 + timedelta(minutes=2), service="api", found=found,
                                observed_canary_percent=5), POLICY)
    rollout = result.state.rollout
    assert rollout.status is Status.HELD and rollout.paused
    assert rollout.evidence is local.rollout.evidence


def test_restore_of_a_rolling_back_record_retries_the_rollback() -> None:
    state = started()
    abort = step(state, Command(time=T0 + timedelta(minutes=1), service="api", action="abort", by=SRE), POLICY)
    record = {k: v for k, v in record_of(abort.state).items() if v}
    found = service_state_from_annotations("api", "p", "l", record, POLICY, now=T0 + timedelta(minutes=3))
    restored = step(ServiceState(service="api"), Resync(time=T0 + timedelta(minutes=3), service="api", found=found,
                                                        observed_canary_percent=5, origin="restore"), POLICY)
    assert restored.state.rollout.status is Status.ROLLING_BACK
    retry = step(restored.state, Tick(time=T0 + timedelta(minutes=4)), POLICY)
    assert [c.canary_percent for c in retry.commands if isinstance(c, SetTraffic)] == [0]
    confirmed = step(ServiceState(service="api"), Resync(time=T0 + timedelta(minutes=3), service="api", found=found,
                                                         observed_canary_percent=0, origin="restore"), POLICY)
    assert confirmed.state.rollout.status is Status.ROLLED_BACK


def test_a_human_change_found_on_restore_stands_down() -> None:
    state = started()
    record = {k: v for k, v in record_of(state).items() if v}
    found = service_state_from_annotations("api", "p", "l", record, POLICY, now=T0 + timedelta(minutes=3))
    result = step(ServiceState(service="api"), Resync(time=T0 + timedelta(minutes=3), service="api", found=found,
                                                      observed_canary_percent=40, origin="restore"), POLICY)
    assert result.state.rollout.status is Status.HALTED
    assert replace(result.decisions[-1]).action == "halt"


def _found(state: ServiceState, at: datetime) -> ServiceState:
    record = {k: v for k, v in record_of(state).items() if v}
    found = service_state_from_annotations("api", "p", "l", record, POLICY, now=at)
    assert found is not None
    return found


def test_a_resync_read_before_our_own_write_landed_changes_nothing() -> None:
    """A periodic read races with this daemon's writes (found by the soak benchmark on a loaded
    machine): the service was listed, then our pause landed, then the stale listing was fed back.
    The older record must not undo the pause, and its traffic is not a human's change."""
    local = started()
    paused = step(local, Command(time=T0 + timedelta(minutes=1), service="api", action="pause", by=SRE), POLICY)
    confirmed = step(paused.state, ActionApplied(time=T0 + timedelta(minutes=1), service="api", action="save-state",
                                                 decision_id=paused.decisions[-1].decision_id), POLICY).state
    assert not confirmed.unsaved and confirmed.rollout.paused
    stale = _found(local, T0 + timedelta(minutes=2))
    result = step(confirmed, Resync(time=T0 + timedelta(minutes=2), service="api", found=stale,
                                    observed_canary_percent=5), POLICY)
    assert result.state.rollout.paused and result.state.rollout.status is Status.HELD
    assert not result.decisions and not result.commands


def test_a_resync_read_of_the_previous_rollout_is_not_a_human_change() -> None:
    """Our redeploy's rollout is running; a listing taken before its first write shows the previous
    rollout's record with that canary at 100%. That is the past, not someone else's traffic."""
    previous = started()
    later = T0 + timedelta(minutes=30)
    redeploy = step(previous, deploy(at=later, revision="api-3", baseline="api-2"), POLICY, now=later)
    current = step(redeploy.state, ActionApplied(time=later, service="api", action="set-traffic",
                                                 decision_id=redeploy.decisions[-1].decision_id,
                                                 canary_percent=5), POLICY).state
    assert current.rollout.canary == "api-3" and current.rollout.status.active
    stale = _found(previous, later + timedelta(minutes=1))
    result = step(current, Resync(time=later + timedelta(minutes=1), service="api", found=stale,
                                  observed_canary_percent=100), POLICY)
    assert result.state.rollout.canary == "api-3" and result.state.rollout.status.active
    assert [d.action for d in result.decisions] == []
