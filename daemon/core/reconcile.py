"""Adopting the durable record read back from a service: restore on start, resync between replicas.

The `rollbackd.dev/*` annotations on a Cloud Run service are the rollout's durable state: every
decision that changes it is written there (with the traffic, or on its own). `on_resync` decides,
purely, what a daemon adopts when it reads them back:

- restore (start-up) and conflict (our write found someone else's record): the record wins;
- resync (periodic): the record wins unless this daemon's own newer record is still being saved, or
  the read is older than what this daemon has (read before its last write landed);
- the evidence a daemon has gathered is kept when the record describes the same rollout and phase
  (it is re-derived from Cloud Monitoring otherwise);
- traffic that no longer matches the record was changed by a human while nobody watched: an active
  rollout stands down; a pending rollback is confirmed (canary at 0%) or retried.

Called by `daemon.core.step` for `Resync` events; the live daemon and the sandbox both send them.
"""
from __future__ import annotations

from dataclasses import replace

from daemon.core import progress
from daemon.core.events import Resync
from daemon.core.outcome import Builder, confirmed_record, durable_part, record_of
from daemon.core.rollout import HANDLED_COMMANDS_KEPT, Rollout, ServiceState, Status
from policies.model import Policy

Result = tuple[ServiceState, Builder, str]
# Evidence-related fields a daemon keeps when the record is about the rollout and phase it knows.
_EVIDENCE_FIELDS = ("evidence", "slots", "evaluated_through", "missing_minutes", "last_assessment",
                    "quiet_until")


def on_resync(state: ServiceState, event: Resync, policy: Policy) -> Result:
    out = Builder()
    found: ServiceState | None = event.found
    if found is None:
        return state, out, "no rollbackd record on the service"
    if event.origin != "conflict" and state.unsaved:
        # Our own newer record is still to be saved (a failed save, or a sandbox restart whose
        # journal knows a decision the crash kept off the service): it is saved on the next tick.
        return state, out, "our own newer record is still being saved"
    if event.origin == "resync" and _older_than_ours(state.rollout, found.rollout):
        # A periodic read races with this daemon's own writes: the service was read before our
        # last write landed. Its record and its traffic describe the past (the traffic check would
        # call our own promotion a human's change), so nothing of it is adopted; the next resync
        # reads the service again.
        return state, out, "the record read is older than ours (read before our last write landed)"
    merged = replace(state, open_alerts=found.open_alerts, kill_switch=found.kill_switch,
                     blocking_incidents=found.blocking_incidents,
                     project=found.project or state.project, location=found.location or state.location,
                     stable_revision=found.stable_revision or state.stable_revision,
                     unsaved=False, save_retry_at=None, confirmed=confirmed_record(found),
                     handled_commands=_handled(state.handled_commands, found.handled_commands))
    local, record = state.rollout, found.rollout
    rollout = _adopt(local, record)
    if rollout is None:
        return merged, out, "nothing to adopt"
    note = "record matches" if rollout is local else f"adopted the service's record ({event.origin})"
    rollout = _check_traffic(rollout, event, policy, out)
    return replace(merged, rollout=rollout), out, note


def _older_than_ours(local: Rollout | None, record: Rollout | None) -> bool:
    """The record is behind this daemon's rollout: an earlier rollout, or the same rollout with fewer
    decisions. The service's record has one linear history (every write is etag-guarded against the
    record it replaces, and each decision counts one more), so a record with fewer decisions than
    ours can only be an old read."""
    if local is None or record is None:
        return False
    if local.rollout_id != record.rollout_id:
        return record.started_at < local.started_at  # our newer rollout's first write has not landed yet
    return record.decisions_made < local.decisions_made


def _handled(local: tuple[str, ...], recorded: tuple[str, ...]) -> tuple[str, ...]:
    """Commands handled here or by another replica: both stay handled (the record's first)."""
    merged = recorded + tuple(c for c in local if c not in recorded)
    return merged[-HANDLED_COMMANDS_KEPT:]


def _adopt(local: Rollout | None, record: Rollout | None) -> Rollout | None:
    if record is None:
        return local
    if local is None:
        return record
    if local.rollout_id != record.rollout_id:
        return record
    if durable_part(record_of(ServiceState(service=local.service, rollout=local))) == \
            durable_part(record_of(ServiceState(service=record.service, rollout=record))):
        return local
    same_phase = record.phase_index == local.phase_index and record.status.active and local.status.active
    kept = {name: getattr(local, name) for name in _EVIDENCE_FIELDS} if same_phase else {
        name: getattr(record, name) for name in _EVIDENCE_FIELDS}
    changes = {name: getattr(record, name) for name in (
        "phase_index", "phase_started_at", "canary_percent", "hold_reason", "paused", "open_alerts", "alerts_before_start",
        "released", "rollback_from_percent", "rollback_attempts", "retry_at", "last_decision")}
    changes["decisions_made"] = max(local.decisions_made, record.decisions_made)
    return local.moved(record.status, "resync", **changes, **kept)


def _check_traffic(rollout: Rollout, event: Resync, policy: Policy, out: Builder) -> Rollout:
    """The traffic read with the record must agree with it; if not, a human changed it meanwhile."""
    observed = event.observed_canary_percent
    if observed is None:
        return rollout
    if rollout.status is Status.ROLLING_BACK and observed == 0:
        return rollout.moved(Status.ROLLED_BACK, "resync", retry_at=None)
    if rollout.status.active and observed != rollout.canary_percent:
        reason = (f"traffic changed by someone else while rollbackd was not watching (canary now "
                  f"{observed}%, rollbackd had set {rollout.canary_percent}%; found on {event.origin}); "
                  "standing down, never fighting a human")
        return progress.halt(rollout, policy, event.time, reason, "resync", out)
    return rollout
