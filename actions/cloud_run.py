"""The real traffic controller: acts on Cloud Run through the Admin API v2 (google-cloud-run).

Chosen by `daemon.bootstrap` for the live daemon (wrapped in `actions.dry_run` under --dry-run).
How a traffic change is made, as the runbook does it (issue 4, "Acting"):

1. `get_service`; refuse a service rollbackd does not manage (PermanentError, never touched):
   managed means the managed label or one of the policy's `managed` selectors, and never the
   opt-out label (`policies.managed`, the same predicate `list_services` filters with);
2. if the traffic and the `rollbackd.dev/*` annotations are already as wanted, make no call;
3. if the canary's share is neither what the core last set (`expected_canary_percent`) nor the
   target, or traffic sits on a third revision, a human changed it: ManualChangeError, no write;
4. `update_service` with the FULL traffic list (baseline 100−p, canary p carrying the `canary` tag,
   also at 0% after a rollback; other tags kept on 0% entries) and the merged annotations, guarded
   by the etag read in step 1;
5. poll the long-running operation on the injected clock, then check `traffic_statuses`.

A stale etag (ConflictError) means someone else wrote: re-read and re-decide from step 1, a bounded
number of times. Transient faults are retried by `actions.retry` from step 1 too, so an update that
landed although its reply was lost is found on the re-read and never sent twice.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

from google.api_core import retry as api_retry
from google.cloud import run_v2

from actions.base import (ApplyResult, ConflictError, ManualChangeError, PermanentError, ServiceView,
                          TrafficEntry, TransientError)
from actions.errors import ErrorHook, guarded
from actions.retry import call_with_retry
from daemon.clock import Clock
from daemon.core.commands import DESCRIPTIVE_ANNOTATIONS, DeleteRevision, SetTraffic
from policies.managed import ManagedPredicate

T = TypeVar("T")
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
# Polls an LRO exactly once per call: retrying belongs to actions.retry, on our clock.
_NO_RETRY = api_retry.Retry(predicate=lambda exc: False)


def short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def service_path(project: str, location: str, service: str) -> str:
    return f"projects/{project}/locations/{location}/services/{service}"


def split_of(service: run_v2.Service, *, statuses: bool = False) -> dict[str, int]:
    """{short revision: percent} of the spec (or of traffic_statuses), LATEST resolved, 0% dropped."""
    out: dict[str, int] = {}
    for t in (service.traffic_statuses if statuses else service.traffic):
        rev = t.revision if (t.type_ == REVISION or statuses) and t.revision \
            else short_name(service.latest_ready_revision)
        if t.percent:
            out[rev] = out.get(rev, 0) + t.percent
    return out


def tags_of(service: run_v2.Service) -> dict[str, str]:
    return {t.tag: (t.revision or short_name(service.latest_ready_revision)) for t in service.traffic if t.tag}


def to_view(service: run_v2.Service) -> ServiceView:
    parts = service.name.split("/")
    entries = tuple(TrafficEntry(revision=t.revision if t.type_ == REVISION else short_name(service.latest_ready_revision),
                                 percent=t.percent, tag=t.tag) for t in service.traffic)
    max_instances = service.scaling.max_instance_count or service.template.scaling.max_instance_count
    return ServiceView(
        name=short_name(service.name), project=parts[1] if len(parts) > 3 else "",
        location=parts[3] if len(parts) > 3 else "", labels=dict(service.labels),
        annotations=dict(service.annotations), traffic=entries,
        latest_created_revision=short_name(service.latest_created_revision),
        latest_ready_revision=short_name(service.latest_ready_revision), etag=service.etag,
        max_instances=max_instances or None)


def wanted_split(cmd: SetTraffic) -> dict[str, int]:
    split = {cmd.canary: cmd.canary_percent}
    if cmd.baseline != cmd.canary:
        split[cmd.baseline] = split.get(cmd.baseline, 0) + 100 - cmd.canary_percent
    else:
        split[cmd.canary] = 100
    return {rev: pct for rev, pct in split.items() if pct}


def desired_traffic(service: run_v2.Service, cmd: SetTraffic, tag: str) -> list[run_v2.TrafficTarget]:
    """The full traffic list to send: baseline and canary (tagged, even at 0%), other tags kept at 0%.

    If the canary tag already sits on another revision, a newer deploy put it there: leave it where
    it is (that deploy supersedes this rollout) rather than take it back."""
    holder = tags_of(service).get(tag)
    ours = holder is None or holder == cmd.canary
    targets: list[run_v2.TrafficTarget] = []
    if cmd.baseline != cmd.canary and cmd.canary_percent < 100:
        targets.append(run_v2.TrafficTarget(type_=REVISION, revision=cmd.baseline, percent=100 - cmd.canary_percent))
    canary_percent = 100 if cmd.baseline == cmd.canary else cmd.canary_percent
    targets.append(run_v2.TrafficTarget(type_=REVISION, revision=cmd.canary, percent=canary_percent,
                                        tag=tag if ours else ""))
    for other_tag, rev in tags_of(service).items():
        if other_tag != tag or not ours:
            targets.append(run_v2.TrafficTarget(type_=REVISION, revision=rev, percent=0, tag=other_tag))
    return targets


@dataclass
class _Progress:
    sent: bool = False  # an UpdateService may have landed (a lost reply still counts)


class CloudRunTrafficController:
    """`actions.base.TrafficController` on the real run_v2 clients (gRPC or REST transport)."""

    def __init__(self, services_client: run_v2.ServicesClient, revisions_client: run_v2.RevisionsClient, *,
                 clock: Clock, rng: random.Random, managed_label: tuple[str, str] = ("rollbackd", "enabled"),
                 managed: ManagedPredicate | None = None,
                 projects_locations: Sequence[tuple[str, str]] = (), on_error: ErrorHook | None = None,
                 canary_tag: str = "canary", call_timeout_s: float = 30.0, lro_timeout_s: float = 300.0,
                 lro_poll_s: float = 2.0, max_conflicts: int = 3, retry_budget_s: float = 60.0,
                 max_attempts: int = 6, backoff_base_s: float = 0.5) -> None:
        self._services = services_client
        self._revisions = revisions_client
        self._clock = clock
        self._rng = rng
        self.managed_label = managed_label
        # Label alone unless the daemon passes the predicate over the current policy's selectors.
        self.managed = managed if managed is not None else ManagedPredicate(managed_label)
        self.projects_locations = list(projects_locations)
        self._on_error = on_error
        self.canary_tag = canary_tag
        self.call_timeout_s = call_timeout_s
        self.lro_timeout_s = lro_timeout_s
        self.lro_poll_s = lro_poll_s
        self.max_conflicts = max_conflicts
        self.retry_budget_s = retry_budget_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s

    # ------------------------------------------------------------------ reads
    def list_services(self) -> list[ServiceView]:
        out: list[ServiceView] = []
        for project, location in self.projects_locations:
            parent = f"projects/{project}/locations/{location}"
            services: list[run_v2.Service] = self._retry(lambda: self._list(parent), api="run.ListServices")
            out.extend(to_view(s) for s in services if self._is_managed(s))
        return out

    def get_service(self, project: str, location: str, service: str) -> ServiceView:
        return to_view(self._retry(lambda: self._read(service_path(project, location, service)),
                                   api="run.GetService"))

    # ------------------------------------------------------------------ writes
    def apply(self, command: SetTraffic) -> ApplyResult:
        if not 0 <= command.canary_percent <= 100 or not command.canary or not command.baseline:
            raise PermanentError(f"invalid traffic command for {command.service}: canary={command.canary!r} "
                                 f"baseline={command.baseline!r} percent={command.canary_percent}",
                                 api="run", code="INVALID_COMMAND")
        name = service_path(command.project, command.location, command.service)
        progress = _Progress()
        return self._with_conflicts(lambda: self._apply_once(name, command, progress))

    def delete_revision(self, command: DeleteRevision) -> None:
        """Untag the revision (a tagged revision cannot be deleted), then delete it. Refuses a revision
        that still serves traffic; a revision already gone counts as deleted."""
        name = service_path(command.project, command.location, command.service)
        self._with_conflicts(lambda: self._untag_once(name, command.revision))
        rev_name = f"projects/{command.project}/locations/{command.location}/revisions/{command.revision}"

        def delete() -> None:
            try:
                op = guarded("run.DeleteRevision", lambda: self._revisions.delete_revision(
                    request={"name": rev_name}, retry=None, timeout=self.call_timeout_s))
                self._wait(op, "run.DeleteRevision")
            except PermanentError as exc:
                if exc.code != "NOT_FOUND":
                    raise

        self._retry(delete, api="run.DeleteRevision")

    # ------------------------------------------------------------------ internals
    def _retry(self, fn: Callable[[], T], *, api: str) -> T:
        return call_with_retry(fn, api=api, clock=self._clock, rng=self._rng, budget_s=self.retry_budget_s,
                               max_attempts=self.max_attempts, base_s=self.backoff_base_s,
                               on_error=self._on_error)

    def _with_conflicts(self, once: Callable[[], T]) -> T:
        conflicts = 0
        while True:
            try:
                return self._retry(once, api="run")
            except ConflictError:
                conflicts += 1
                if conflicts > self.max_conflicts:
                    raise
                # Someone else wrote between our read and our write: loop to re-read and re-decide.

    def _list(self, parent: str) -> list[run_v2.Service]:
        # list() walks every page inside one attempt, so a fault on page 3 retries the listing.
        return guarded("run.ListServices", lambda: list(self._services.list_services(
            request={"parent": parent}, retry=None, timeout=self.call_timeout_s)))

    def _read(self, name: str) -> run_v2.Service:
        return guarded("run.GetService", lambda: self._services.get_service(
            request={"name": name}, retry=None, timeout=self.call_timeout_s))

    def _is_managed(self, service: run_v2.Service) -> bool:
        return self.managed(short_name(service.name), dict(service.labels))

    def _require_managed(self, service: run_v2.Service) -> None:
        if not self._is_managed(service):
            name = short_name(service.name)
            raise PermanentError(f"refusing to act on {name}: {self.managed.why_not(name, dict(service.labels))}",
                                 api="run", code="UNMANAGED")

    def _apply_once(self, name: str, cmd: SetTraffic, progress: _Progress) -> ApplyResult:
        service = self._read(name)
        self._require_managed(service)
        wanted = wanted_split(cmd)
        spec = split_of(service)
        # The canary tag must exist: on our canary, or on a newer deploy's revision (left alone).
        spec_ok = spec == wanted and self.canary_tag in tags_of(service)
        annotations_ok = all(service.annotations.get(k) == v for k, v in cmd.annotations.items()
                             if k not in DESCRIPTIVE_ANNOTATIONS)
        if spec_ok and annotations_ok:
            if split_of(service, statuses=True) == wanted:
                return ApplyResult(changed=progress.sent, service=to_view(service))
            if service.reconciling:
                raise TransientError(f"{cmd.service}: traffic is set but still reconciling", api="run",
                                     code="RECONCILING")
            # Reconciliation failed: sending the same spec again asks Cloud Run to retry it.
        elif not spec_ok and cmd.expected_canary_percent is not None:
            observed = spec.get(cmd.canary, 0)
            elsewhere = sorted(r for r in spec if r not in (cmd.canary, cmd.baseline))
            if observed not in (cmd.expected_canary_percent, cmd.canary_percent) or elsewhere:
                raise ManualChangeError(
                    f"{cmd.service}: canary {cmd.canary} has {observed}% (expected "
                    f"{cmd.expected_canary_percent}%)" + (f", traffic on {', '.join(elsewhere)}" if elsewhere else "")
                    + ": changed by someone else; standing down", observed_canary_percent=observed)
        service.traffic = desired_traffic(service, cmd, self.canary_tag)
        merged = dict(service.annotations)
        merged.update(cmd.annotations)
        service.annotations = merged
        progress.sent = True  # set before the call: the update may land even if its reply is lost
        result = self._update(service)
        if split_of(result, statuses=True) != wanted:
            raise TransientError(f"{cmd.service}: traffic_statuses {split_of(result, statuses=True)} do not "
                                 f"match {wanted} yet", api="run", code="RECONCILING")
        return ApplyResult(changed=True, service=to_view(result))

    def _untag_once(self, name: str, revision: str) -> None:
        service = self._read(name)
        self._require_managed(service)
        if split_of(service).get(revision, 0) > 0:
            raise PermanentError(f"refusing to delete {revision}: it still serves traffic", api="run",
                                 code="SERVING")
        kept = [t for t in service.traffic if not (t.revision == revision and t.percent == 0)]
        if len(kept) != len(service.traffic):
            service.traffic = kept
            self._update(service)

    def _update(self, service: run_v2.Service) -> run_v2.Service:
        op = guarded("run.UpdateService", lambda: self._services.update_service(
            request=run_v2.UpdateServiceRequest(service=service), retry=None, timeout=self.call_timeout_s))
        return self._wait(op, "run.UpdateService")

    def _wait(self, operation: Any, api: str) -> Any:
        """Poll the LRO on our clock, within lro_timeout_s; the LRO's own error is translated."""
        deadline = self._clock.monotonic() + self.lro_timeout_s
        while not guarded("run.GetOperation", lambda: operation.done(retry=_NO_RETRY)):
            if self._clock.monotonic() >= deadline:
                raise TransientError(f"{api}: operation {operation.operation.name} not done after "
                                     f"{self.lro_timeout_s:.0f}s", api=api, code="LRO_TIMEOUT")
            self._clock.sleep_until(self._clock.now() + timedelta(seconds=self.lro_poll_s))
        return guarded(api, lambda: operation.result(timeout=self.call_timeout_s))
