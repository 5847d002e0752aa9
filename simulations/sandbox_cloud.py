"""An in-process simulated Cloud Run: services, revisions, traffic, etags and annotations.

Used by replay, backtests and the sandbox (`rollbackd run --sandbox`). It implements the same
`TrafficController` interface as the real Cloud Run adapter, with the same rules: an update carries
the whole traffic list, bumps the etag, writes `rollbackd.dev/*` annotations in the same update,
refuses to overwrite a traffic split a human changed, and makes no call when nothing would change.
Its state can be saved to and loaded from a JSON file so a sandbox restart continues where it stopped.
Services are keyed as Cloud Run keys them, by project, location and name (`daemon.core.service_id`):
`checkout` in two regions is two services. A name given without a location (an old recording's
command) finds the one service of that name.
`list_services` returns the managed services by the same predicate as the live controller
(`policies.managed`: the label, the policy's selectors when the sandbox passes them, the opt-out).

A person's annotation-only update (`update_annotations`, what `rollbackd ctl` sends) is published
as the Admin Activity audit entry a Logging sink would deliver (`simulations.audit_sink`), with the
principal Google would have authenticated, to `audit_sink`: the sandbox's commands take the
production path (the audit parser, the read-back, the authorisation).
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from daemon.core.commands import DeleteRevision, SaveState, SetTraffic
from daemon.core.service_id import ServiceId
from daemon.core.ownership import (Split, classify_split, merged_annotations, record_changed_by_others,
                                   record_matches)
from daemon.ports import (ApplyResult, ManualChangeError, PermanentError, RecordChangedError, ServiceView,
                          TrafficEntry)
from policies.managed import ManagedPredicate


DEFAULT_PROJECT, DEFAULT_LOCATION = "rollbackd-sandbox", "sandbox-1"


@dataclass
class SimService:
    name: str
    project: str = DEFAULT_PROJECT
    location: str = DEFAULT_LOCATION
    labels: dict[str, str] = field(default_factory=lambda: {"rollbackd": "enabled"})
    annotations: dict[str, str] = field(default_factory=dict)
    traffic: list[dict[str, Any]] = field(default_factory=list)  # [{"revision","percent","tag"}]
    revisions: list[str] = field(default_factory=list)
    generation: int = 1
    max_instances: int = 100

    @property
    def key(self) -> str:
        """Its Cloud Run resource name: projects/P/locations/L/services/N."""
        return str(ServiceId(self.project, self.location, self.name))

    @property
    def etag(self) -> str:
        return f'"{self.name}-{self.generation}"'

    def view(self) -> ServiceView:
        latest = self.revisions[-1] if self.revisions else ""
        return ServiceView(
            name=self.name, project=self.project, location=self.location, labels=dict(self.labels),
            annotations=dict(self.annotations),
            traffic=tuple(TrafficEntry(t["revision"], int(t.get("percent", 0)), t.get("tag", ""))
                          for t in self.traffic),
            latest_created_revision=latest, latest_ready_revision=latest, etag=self.etag,
            max_instances=self.max_instances)


class SimulatedCloudRun:
    """Thread-safe simulated Cloud Run with a request log (`calls`)."""

    def __init__(self, path: str | None = None,
                 managed: Callable[[str, Mapping[str, str]], bool] | None = None) -> None:
        self._lock = threading.Lock()
        self.managed = managed or ManagedPredicate()  # rollbackd=enabled unless told otherwise
        self.services: dict[str, SimService] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.path = path
        self.audit_sink: Callable[[dict[str, Any]], None] | None = None
        self._operations = 0
        if path and os.path.exists(path):
            self._load(path)

    # --- which service ------------------------------------------------------------------------
    def find(self, name: str, project: str = "", location: str = "") -> SimService | None:
        """The service by resource name, or by name and whichever of project and location are given
        (None: no such service, or the name is in several locations and the caller did not say)."""
        if "/" in name:
            wanted = ServiceId.parse(name)
            name, project, location = wanted.name, wanted.project, wanted.location
        found = [s for s in self.services.values() if s.name == name
                 and (not project or s.project == project) and (not location or s.location == location)]
        return found[0] if len(found) == 1 else None

    def service(self, name: str, project: str = "", location: str = "") -> SimService:
        found = self.find(name, project, location)
        if found is None:
            raise KeyError(f"no single service {name} (project {project or 'any'}, location {location or 'any'})")
        return found

    def _add(self, service: SimService) -> SimService:
        self.services[service.key] = service
        return service

    def update_annotations(self, name: str, annotations: Mapping[str, str], *, principal: str, at: datetime) -> None:
        """A person's `UpdateService` of annotations only (as `rollbackd ctl` sends it, authenticated as
        `principal`): merged into the service, then its audit entry is published, outside the lock."""
        from simulations.audit_sink import update_service_entry

        with self._lock:
            service = self.service(name)
            service.annotations = {**service.annotations, **annotations}
            service.generation += 1
            self._operations += 1
            entry = update_service_entry(
                project=service.project, location=service.location, service=service.name, principal=principal, at=at,
                operation_id=f"projects/{service.project}/locations/{service.location}/operations/sim-{self._operations}",
                request_service={"annotations": dict(service.annotations), "labels": dict(service.labels)},
                update_mask=["annotations"])
            self._save()
        if self.audit_sink is not None:
            self.audit_sink(entry)

    # --- set-up used by the sandbox, replay and tests -----------------------------------------
    def ensure_service(self, name: str, *, project: str = "", location: str = "",
                       labels: dict[str, str] | None = None) -> SimService:
        with self._lock:
            service = self.find(name, project, location)
            if service is None:
                # A service first named without a place (an old recording) takes the place it is
                # later given; one created with a place stays there.
                service = self.find(name, "", "") if (project or location) else None
                if service is not None and (service.project, service.location) != (DEFAULT_PROJECT,
                                                                                   DEFAULT_LOCATION):
                    service = None
                if service is not None:
                    del self.services[service.key]
                else:
                    service = SimService(name=name)
                service.project = project or service.project
                service.location = location or service.location
                self._add(service)
            if labels is not None:
                service.labels = dict(labels)
            return service

    def deploy(self, name: str, revision: str, *, baseline: str | None = None, tag: str = "canary") -> None:
        """`gcloud run deploy --no-traffic --tag=canary`: the revision appears at 0%."""
        service = self.ensure_service(name)
        with self._lock:
            if baseline and baseline not in service.revisions:
                service.revisions.append(baseline)
            if baseline and not any(t["revision"] == baseline for t in service.traffic):
                service.traffic = [{"revision": baseline, "percent": 100, "tag": ""}]
            if revision not in service.revisions:
                service.revisions.append(revision)
            service.traffic = [t for t in service.traffic if t.get("tag") != tag]
            service.traffic.append({"revision": revision, "percent": 0, "tag": tag})
            service.generation += 1
            self._save()

    def set_traffic_by_hand(self, name: str, split: dict[str, int]) -> None:
        """A human's `gcloud run services update-traffic`."""
        with self._lock:
            service = self.service(name)
            tags = {t["revision"]: t.get("tag", "") for t in service.traffic}
            service.traffic = [{"revision": r, "percent": p, "tag": tags.get(r, "")} for r, p in split.items()]
            service.generation += 1
            self._save()

    def traffic_of(self, name: str) -> dict[str, int]:
        with self._lock:
            service = self.find(name)
            return {t["revision"]: int(t.get("percent", 0)) for t in service.traffic} if service else {}

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    # --- TrafficController --------------------------------------------------------------------
    def list_services(self) -> list[ServiceView]:
        with self._lock:
            self.calls.append(("ListServices", {}))
            return [s.view() for s in self.services.values() if self.managed(s.name, s.labels)]

    def get_service(self, project: str, location: str, service: str) -> ServiceView:
        with self._lock:
            self.calls.append(("GetService", {"service": service}))
            found = self.find(service, project, location)
            if found is None:
                raise PermanentError(f"service {service} not found", api="run", code="NOT_FOUND")
            return found.view()

    def apply(self, command: SetTraffic) -> ApplyResult:
        with self._lock:
            self.calls.append(("GetService", {"service": command.service}))
            service = self.find(command.service, command.project, command.location)
            if service is None:  # replay creates services on the fly
                service = self._add(SimService(
                    name=command.service, project=command.project or DEFAULT_PROJECT,
                    location=command.location or DEFAULT_LOCATION,
                    traffic=[{"revision": command.baseline, "percent": 100, "tag": ""},
                             {"revision": command.canary, "percent": 0, "tag": "canary"}],
                    revisions=[command.baseline, command.canary]))
            current = {t["revision"]: int(t.get("percent", 0)) for t in service.traffic}
            wanted = {command.baseline: 100 - command.canary_percent, command.canary: command.canary_percent}
            wanted_traffic = [{"revision": command.baseline, "percent": 100 - command.canary_percent, "tag": ""},
                              {"revision": command.canary, "percent": command.canary_percent, "tag": "canary"}]
            verdict = classify_split(current, command)  # the live controller's rule, the same function
            # Already as wanted (e.g. re-applied after a restart): idempotent, no call. Checked before
            # the manual-change rule, so a replayed command never looks like a human's change.
            if verdict.split is Split.AS_WANTED and record_matches(service.annotations, command.annotations):
                return ApplyResult(changed=False, service=service.view())
            if verdict.split is Split.HUMAN:
                raise ManualChangeError(verdict.reason, observed_canary_percent=verdict.observed_canary_percent)
            if record_changed_by_others(service.annotations, command.expected_annotations, command.annotations):
                raise RecordChangedError(f"{command.service}: the rollbackd record changed since it was read")
            for revision in (command.baseline, command.canary):
                if revision not in service.revisions:
                    service.revisions.append(revision)
            service.traffic = wanted_traffic
            service.annotations = merged_annotations(service.annotations, command.annotations)
            service.generation += 1
            self.calls.append(("UpdateService", {"service": command.service, "traffic": dict(wanted),
                                                 "decision_id": command.decision_id}))
            self._save()
            return ApplyResult(changed=True, service=service.view())

    def save_state(self, command: SaveState) -> ApplyResult:
        with self._lock:
            self.calls.append(("GetService", {"service": command.service}))
            service = self.find(command.service, command.project, command.location)
            if service is None:  # replay creates services on the fly, as `apply` does
                service = self._add(SimService(name=command.service, project=command.project or DEFAULT_PROJECT,
                                               location=command.location or DEFAULT_LOCATION))
            if record_matches(service.annotations, command.annotations):
                return ApplyResult(changed=False, service=service.view())
            if record_changed_by_others(service.annotations, command.expected_annotations, command.annotations):
                raise RecordChangedError(f"{command.service}: the rollbackd record changed since it was read")
            service.annotations = merged_annotations(service.annotations, command.annotations)
            # On Cloud Run this is an UpdateService with the traffic sent back unchanged; logged under
            # its own name so "every traffic change once" is checked on the traffic updates alone.
            self.calls.append(("SaveState", {"service": command.service, "decision_id": command.decision_id}))
            self._save()
            return ApplyResult(changed=True, service=service.view())

    def delete_revision(self, command: DeleteRevision) -> None:
        with self._lock:
            self.calls.append(("DeleteRevision", {"revision": command.revision}))
            service = self.find(command.service, command.project, command.location)
            if service and command.revision in service.revisions:
                if any(t["revision"] == command.revision and t.get("percent") for t in service.traffic):
                    raise PermanentError("cannot delete a revision that serves traffic", api="run",
                                         code="FAILED_PRECONDITION")
                service.revisions.remove(command.revision)
                service.traffic = [t for t in service.traffic if t["revision"] != command.revision]
                self._save()

    # --- persistence (sandbox --state-dir) ----------------------------------------------------
    def _save(self) -> None:
        if not self.path:
            return
        data = {"services": {n: vars(s) for n, s in self.services.items()},
                "calls": [[m, a] for m, a in self.calls]}
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)  # atomic: a crash leaves the old or the new file

    def _load(self, path: str) -> None:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        # Keyed by resource name (older files by name alone: the key is rebuilt from the service).
        loaded = [SimService(**s) for s in data.get("services", {}).values()]
        self.services = {s.key: s for s in loaded}
        self.calls = [(m, a) for m, a in data.get("calls", [])]
