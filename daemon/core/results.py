"""What the outside world's answers do to a service's state: an action applied or failed, a rollback
retried, a human taking a rollback over, a state save retried.

Called by `daemon.core.step` for the `action-applied`, `action-failed` and `tick` events; pure like
the rest of the core. Two rules live here:

- A rollback is a goal, not a one-shot call. The rollout stays `rolling-back` and its traffic change
  is asked for again with backoff until Cloud Run confirms the canary's share is 0, or a human takes
  traffic over. A failed rollback never becomes "halted" with the bad canary still serving.
- The durable record (annotations) must reach the service. A failed save is retried on ticks, so a
  pause, a hold or a halt survives a restart even when Cloud Run was briefly unavailable.

Each returns `(new state, Builder, note)`; `step` turns them into a `Step`.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from daemon.core import progress
from daemon.core.commands import Notify
from daemon.core.events import ActionApplied, ActionFailed, TrafficChanged
from daemon.core.outcome import Builder, confirmed_record
from daemon.core.rollout import ServiceState, Status
from policies.model import Policy

# Seconds before the next attempt, by failed attempts so far; then every last value.
ROLLBACK_BACKOFF_S = (15, 30, 60, 120, 300)
SAVE_RETRY_S = 60
# A failing rollback pages again every this many failed attempts (the first failure always pages).
RENOTIFY_EVERY = 6

Result = tuple[ServiceState, Builder, str]


def backoff_s(failed_attempts: int) -> int:
    return ROLLBACK_BACKOFF_S[min(max(failed_attempts, 1), len(ROLLBACK_BACKOFF_S)) - 1]


def next_wakeup(state: ServiceState, policy: Policy) -> datetime | None:
    """The earliest time the core wants a tick: evidence due, a rollback retry, a state save retry."""
    rollout = state.rollout
    wanted: list[datetime] = []
    if rollout is not None and rollout.status.active:
        due = progress.next_wakeup(rollout, policy)
        if due is not None:
            wanted.append(due)
    if rollout is not None and rollout.status is Status.ROLLING_BACK and rollout.retry_at is not None:
        wanted.append(rollout.retry_at)
    if state.unsaved and state.save_retry_at is not None:
        wanted.append(state.save_retry_at)
    return min(wanted) if wanted else None


def _ours(state: ServiceState, decision_id: str) -> bool:
    """Is this result about the current rollout? (A result of a superseded rollout's write is not.)"""
    rollout = state.rollout
    return not decision_id or rollout is None or decision_id.startswith(f"{rollout.rollout_id}#")


def on_applied(state: ServiceState, event: ActionApplied, policy: Policy) -> Result:
    out = Builder()
    if not _ours(state, event.decision_id):
        return state, out, f"{event.action} of an earlier rollout applied"
    # What the service carries now: the record the write carried, or else the state as it was when
    # this write was asked for (nothing changes between a command and its result). A re-applied
    # older write (after a restart) confirms its own older record: ours is still to be saved.
    carried = event.record if event.record is not None else confirmed_record(state)
    unsaved = carried != confirmed_record(state)
    state = replace(state, unsaved=unsaved, save_retry_at=None, confirmed=carried)
    rollout = state.rollout
    if (rollout is not None and rollout.status is Status.ROLLING_BACK and event.action == "set-traffic"
            and event.canary_percent == 0):
        done = rollout.moved(Status.ROLLED_BACK, "action-applied", retry_at=None)
        return replace(state, rollout=done), out, "rollback confirmed by Cloud Run"
    return state, out, f"{event.action} applied"


def on_failed(state: ServiceState, event: ActionFailed, policy: Policy) -> Result:
    out = Builder()
    rollout = state.rollout
    if not _ours(state, event.decision_id):
        return state, out, f"{event.action} of an earlier rollout failed"
    if event.action == "save-state":
        first = state.save_retry_at is None
        state = replace(state, unsaved=True, save_retry_at=event.time + timedelta(seconds=SAVE_RETRY_S))
        if first:
            out.commands.append(Notify(service=state.service, severity="WARNING",
                                       subject=f"{state.service}: rollbackd could not save its state on the "
                                               f"service; retrying every {SAVE_RETRY_S} s",
                                       decision={"service": state.service, "error": event.error,
                                                 "time": event.time.isoformat()}))
        return state, out, f"state not saved: {event.error}; retried"
    if rollout is None:
        return state, out, "no rollout"
    if rollout.status is Status.ROLLING_BACK:
        attempts = rollout.rollback_attempts + 1
        wait = backoff_s(attempts)
        rollout = rollout.with_(rollback_attempts=attempts, retry_at=event.time + timedelta(seconds=wait))
        if attempts == 1 or attempts % RENOTIFY_EVERY == 0:
            out.commands.append(Notify(
                service=rollout.service, severity="ERROR",
                subject=f"{rollout.service}: rollback of {rollout.canary} not done yet (attempt {attempts}); "
                        f"retrying in {wait} s",
                decision={"service": rollout.service, "canary": rollout.canary, "baseline": rollout.baseline,
                          "rollout_id": rollout.rollout_id, "error": event.error, "attempts": attempts,
                          "canary_percent_now": rollout.rollback_from_percent,
                          "time": event.time.isoformat()}))
        return replace(state, rollout=rollout), out, f"rollback attempt {attempts} failed: {event.error}"
    if rollout.status.active or rollout.status is Status.COMPLETED:
        # A promotion that did not land: traffic is still where it was. Say so, and stand down.
        was = event.canary_percent_before if event.canary_percent_before is not None else rollout.canary_percent
        rollout = rollout.with_(canary_percent=was)
        reason = f"{event.action} failed: {event.error}"
        rollout = progress.halt(rollout, policy, event.time, reason, "action-failed", out)
        return replace(state, rollout=rollout), out, ""
    return state, out, f"{event.action} failed after the rollout ended: {event.error}"


def retry_rollback(state: ServiceState, at: datetime, policy: Policy, *, force: bool = False) -> Result:
    """Ask again for the rollback's traffic when its backoff is over (or now, on an operator's abort)."""
    out = Builder()
    rollout = state.rollout
    assert rollout is not None and rollout.status is Status.ROLLING_BACK
    if not force and rollout.retry_at is not None and at < rollout.retry_at:
        return state, out, ""
    rollout = rollout.with_(retry_at=at + timedelta(seconds=backoff_s(rollout.rollback_attempts + 1)))
    out.set_traffic(rollout, rollout, f"rollback of {rollout.canary}, attempt {rollout.rollback_attempts + 1}",
                    expected_canary_percent=rollout.rollback_from_percent)
    return replace(state, rollout=rollout), out, "rollback retried"


def save_due(state: ServiceState, at: datetime) -> ServiceState | None:
    """When an unsaved record is due to be saved again at `at`: the state with the next retry time
    set. None when nothing is unsaved or the retry is not due yet."""
    if not state.unsaved or (state.save_retry_at is not None and at < state.save_retry_at):
        return None
    return replace(state, save_retry_at=at + timedelta(seconds=SAVE_RETRY_S))


def retry_save(state: ServiceState, at: datetime) -> Result:
    """A tick with nothing to decide: save the record again if it is due (`Builder.force_save`
    writes it even though this step did not change it)."""
    out = Builder()
    due = save_due(state, at)
    if due is None:
        return state, out, ""
    out.force_save = True
    return due, out, "state save retried"


def taken_over(state: ServiceState, event: TrafficChanged, policy: Policy) -> Result:
    """Someone else changed traffic while a rollback was pending."""
    out = Builder()
    rollout = state.rollout
    assert rollout is not None and rollout.status is Status.ROLLING_BACK
    if event.canary_percent == 0:
        done = rollout.moved(Status.ROLLED_BACK, "traffic-changed", retry_at=None)
        return replace(state, rollout=done), out, f"rollback completed by {event.principal or 'someone else'}"
    if event.canary_percent is not None and event.canary_percent == rollout.rollback_from_percent \
            and not event.principal:
        return state, out, "the canary still has its share; the rollback is retried"
    seen = "unknown" if event.canary_percent is None else f"{event.canary_percent}%"
    rollout = progress.halt(rollout.with_(canary_percent=event.canary_percent or 0), policy, event.time,
                            f"traffic changed by {event.principal or 'someone else'} while rolling back "
                            f"(canary now {seen})", "traffic-changed", out)
    return replace(state, rollout=rollout), out, ""
