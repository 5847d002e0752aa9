"""An in-process gRPC fake of the Cloud Run Admin API v2 (Services, Revisions, Operations).

Integration tests and the live-adapter crash/replica tests point the real
`google.cloud.run_v2.ServicesClient` / `RevisionsClient` at it over loopback:

    fake = CloudRunFake(); addr = fake.start()
    channel = grpc.insecure_channel(addr)
    services = run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))

Semantics modelled on the real API (see shared/reference/gcp-formats.md §3): every update changes
the etag and bumps the generation; an update carrying a stale etag fails with ABORTED; UpdateService
and DeleteRevision return a long-running operation with done=False that completes on the first
GetOperation poll (so `operation.result()` exercises the real polling path); `traffic_statuses`
mirror `traffic` once the operation completes; traffic must total 100 and tags be unique; a revision
still referenced by traffic (a percent or a tag) cannot be deleted (FAILED_PRECONDITION).

Test helpers (`add_service`, `deploy_revision`, `set_traffic_by_hand`, `traffic_of`, ...) change the
state directly, the way a human with gcloud would, and also move the etag. `requests` records every
RPC and `faults` injects errors or slowness per method name.

Identity and the audit trail, as Google does them at the wire: the caller is the email mapped from
the request's `authorization: Bearer TOKEN` metadata (`tokens`, a test-only token → email table;
no token is `anonymous_principal`, the daemon's own plain-text channel), an unknown token is
UNAUTHENTICATED, and `audit_sink(entry)`, when set, receives the Admin Activity audit entry a Logging
sink would publish for every accepted UpdateService (`simulations.audit_sink`), with that principal.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import status_pb2

from tests.fakes.wire import FAULT_CODES, FaultPlan, RequestLog, serve, unary

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
# Namespaces the real v2 API rejects in user labels/annotations.
RESERVED_PREFIXES = ("run.googleapis.com/", "serving.knative.dev/", "autoscaling.knative.dev/")
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

TrafficSpec = Mapping[str, int] | Sequence[tuple[str, int, str]]


@dataclass
class _Op:
    name: str
    response: Any  # the proto-plus message packed on completion
    apply: Any  # callable run when the operation completes (or None)
    on_fail: Any  # callable run when it completes with an error (or None)
    polls_left: int
    error: tuple[str, str] | None = None  # (FAULT_CODES name, message) to fail the LRO with
    done: bool = False
    resource: str = ""


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _ts(offset_s: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(_EPOCH + timedelta(seconds=offset_s))
    return ts


class CloudRunFake:
    """State plus gRPC handlers. Thread-safe: one lock guards every read and write."""

    def __init__(self) -> None:
        self.requests = RequestLog()
        self.faults = FaultPlan()
        self._lock = threading.RLock()
        self._services: dict[str, run_v2.Service] = {}  # full name → service
        self._revisions: dict[str, run_v2.Revision] = {}  # full name → revision
        self._ops: dict[str, _Op] = {}
        self._counter = 0
        self._server: grpc.Server | None = None
        self.address = ""  # host:port once started
        # Identity (see the module doc) and the sink that gets an audit entry per accepted update.
        self.tokens: dict[str, str] = {}
        self.anonymous_principal = ""
        self.audit_sink: Any = None  # callable(entry dict) or None
        self.clock: Any = None  # for the entries' timestamps (the tests' virtual clock)
        self.callers: list[tuple[str, str]] = []  # (method, principal) of every authenticated call
        # Knobs for reliability tests.
        self.lro_polls_to_done = 1  # GetOperation polls before an LRO completes
        self.stall_reconcile = False  # when True, traffic_statuses never catch up with traffic
        self.complete_on_read = True  # a GetService/ListServices finishes the service's pending LROs
        self._fail_next_lro: tuple[str, str] | None = None
        # Every UpdateService the fake accepted: (short service, {revision: percent}, annotations).
        # Unlike `requests`, rejected (stale etag, injected fault) calls are not in it.
        self.accepted_updates: list[tuple[str, dict[str, int], dict[str, str]]] = []
        # The accepted updates that moved traffic (annotation-only updates, rollbackd saving its
        # record after a pause or a hold, left out): "each traffic change once" is checked on these.
        self.traffic_changes: list[tuple[str, dict[str, int], dict[str, str]]] = []
        # The same changes by full resource name (project, location, service): same-named services in
        # two regions are told apart here.
        self.resource_traffic_changes: list[tuple[str, dict[str, int]]] = []

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        services = "google.cloud.run.v2.Services"
        revisions = "google.cloud.run.v2.Revisions"
        handlers = {
            services: dict([
                unary(services, "GetService", self._get_service, run_v2.GetServiceRequest, run_v2.Service),
                unary(services, "ListServices", self._list_services, run_v2.ListServicesRequest,
                      run_v2.ListServicesResponse),
                unary(services, "UpdateService", self._update_service, run_v2.UpdateServiceRequest,
                      operations_pb2.Operation),
            ]),
            revisions: dict([
                unary(revisions, "GetRevision", self._get_revision, run_v2.GetRevisionRequest, run_v2.Revision),
                unary(revisions, "ListRevisions", self._list_revisions, run_v2.ListRevisionsRequest,
                      run_v2.ListRevisionsResponse),
                unary(revisions, "DeleteRevision", self._delete_revision, run_v2.DeleteRevisionRequest,
                      operations_pb2.Operation),
            ]),
            "google.longrunning.Operations": dict([
                unary("google.longrunning.Operations", "GetOperation", self._get_operation,
                      operations_pb2.GetOperationRequest, operations_pb2.Operation),
            ]),
        }
        self._server, port = serve(handlers)
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    # ------------------------------------------------------------------ helpers
    def add_service(self, name: str, project: str = "p", location: str = "europe-west1", *,
                    revisions: Sequence[str] | None = None, traffic: TrafficSpec | None = None,
                    labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
                    max_instances: int | None = None) -> str:
        """Create a service with its revisions (oldest first). Traffic defaults to 100% on the last
        revision. Returns the service's full resource name."""
        full = f"projects/{project}/locations/{location}/services/{name}"
        revs = list(revisions or [f"{name}-00001-abc"])
        for key in {**(labels or {}), **(annotations or {})}:
            if key.startswith(RESERVED_PREFIXES):
                raise ValueError(f"reserved key {key}")
        with self._lock:
            gen = self._tick()
            service = run_v2.Service(
                name=full, uid=f"uid-{name}", generation=gen, labels=dict(labels or {}),
                annotations=dict(annotations or {}), uri=f"https://{name}-xyz.a.run.app",
                create_time=_ts(gen), update_time=_ts(gen))
            if max_instances is not None:
                service.scaling = run_v2.ServiceScaling(max_instance_count=max_instances)
            self._services[full] = service
            for rev in revs:
                self._new_revision(service, rev, max_instances)
            service.traffic = self._targets(traffic if traffic is not None else {revs[-1]: 100})
            self._check_traffic(service, service.traffic)
            self._settle(service)
        return full

    def deploy_revision(self, service: str, revision: str, tag: str = "canary") -> None:
        """`gcloud run deploy --no-traffic --tag=TAG`: a new revision at 0%, tagged; LATEST shares are
        pinned to the previous ready revision first (gcloud's ZeroLatestTraffic)."""
        with self._lock:
            svc = self._service(service)
            previous = _short(svc.latest_ready_revision)
            targets: list[run_v2.TrafficTarget] = []
            for t in svc.traffic:
                if t.type_ == LATEST:
                    t = run_v2.TrafficTarget(type_=REVISION, revision=previous, percent=t.percent, tag=t.tag)
                if tag and t.tag == tag:
                    if t.percent == 0:
                        continue  # the tag moves to the new revision
                    t = run_v2.TrafficTarget(type_=REVISION, revision=t.revision, percent=t.percent)
                targets.append(t)
            self._new_revision(svc, revision, svc.scaling.max_instance_count or None)
            targets.append(run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=0, tag=tag))
            svc.traffic = targets
            svc.template = run_v2.RevisionTemplate(revision=revision)
            self._bump(svc)
            self._settle(svc)

    def set_traffic_by_hand(self, service: str, split: Mapping[str, int]) -> None:
        """A human's `gcloud run services update-traffic --to-revisions=...`: percents replaced,
        existing tags kept on 0% entries."""
        with self._lock:
            svc = self._service(service)
            targets = self._targets(split)
            targets += [run_v2.TrafficTarget(type_=REVISION, revision=t.revision or previous_latest(svc),
                                             percent=0, tag=t.tag) for t in svc.traffic if t.tag]
            self._check_traffic(svc, targets)
            svc.traffic = targets
            self._bump(svc)
            self._settle(svc)

    def set_labels_by_hand(self, service: str, labels: Mapping[str, str]) -> None:
        with self._lock:
            svc = self._service(service)
            svc.labels = dict(labels)
            self._bump(svc)

    def delete_revision_by_hand(self, revision_full_or_short: str) -> None:
        with self._lock:
            for full in list(self._revisions):
                if full == revision_full_or_short or _short(full) == revision_full_or_short:
                    del self._revisions[full]

    def fail_next_operation(self, code: str, message: str = "injected LRO failure") -> None:
        """The next UpdateService/DeleteRevision LRO completes with an error and changes nothing."""
        if code not in FAULT_CODES:
            raise ValueError(code)
        self._fail_next_lro = (code, message)

    def complete_operations(self) -> None:
        """Finish every pending LRO, as the real control plane would without being polled."""
        with self._lock:
            for op in self._ops.values():
                if not op.done:
                    self._finish(op)

    def traffic_of(self, service: str) -> dict[str, int]:
        """{short revision: percent} summed per revision, tag-only entries included at 0."""
        with self._lock:
            return _split(self._service(service))

    def tags_of(self, service: str) -> dict[str, str]:
        with self._lock:
            return {t.tag: t.revision for t in self._service(service).traffic if t.tag}

    def status_traffic_of(self, service: str) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for t in self._service(service).traffic_statuses:
                out[t.revision] = out.get(t.revision, 0) + t.percent
            return out

    def service(self, service: str) -> run_v2.Service:
        """A copy of the stored service."""
        with self._lock:
            return run_v2.Service.deserialize(run_v2.Service.serialize(self._service(service)))

    def set_annotations(self, service: str, annotations: Mapping[str, str]) -> None:
        """Someone edits the service's annotations by hand (or a bad tool corrupts them)."""
        with self._lock:
            svc = self._service(service)
            svc.annotations = {**dict(svc.annotations), **dict(annotations)}
            self._bump(svc)

    def annotations_of(self, service: str) -> dict[str, str]:
        with self._lock:
            return dict(self._service(service).annotations)

    def etag_of(self, service: str) -> str:
        with self._lock:
            return self._service(service).etag

    def revisions_of(self, service: str) -> list[str]:
        with self._lock:
            full = self._service(service).name
            return [_short(r.name) for r in self._revisions.values() if r.service == full]

    def traffic_updates(self, service: str | None = None) -> list[run_v2.UpdateServiceRequest]:
        """UpdateService requests received (optionally for one service, short or full name)."""
        reqs = self.requests.of("UpdateService")
        if service is None:
            return reqs
        return [r for r in reqs if r.service.name == service or _short(r.service.name) == service]

    # ------------------------------------------------------------------ internals
    def _tick(self) -> int:
        self._counter += 1
        return self._counter

    def _bump(self, svc: run_v2.Service) -> None:
        svc.generation = svc.generation + 1
        svc.etag = f'W/"{svc.generation}-{self._tick():06d}"'
        svc.update_time = _ts(self._counter)

    def _settle(self, svc: run_v2.Service) -> None:
        """Reconciliation finished: statuses mirror the spec."""
        if not svc.etag:
            svc.etag = f'W/"{svc.generation}-{self._tick():06d}"'
        statuses = []
        for t in svc.traffic:
            rev = t.revision if t.type_ == REVISION else _short(svc.latest_ready_revision)
            statuses.append(run_v2.TrafficTargetStatus(
                type_=t.type_, revision=rev, percent=t.percent, tag=t.tag,
                uri=f"https://{t.tag}---{_short(svc.name)}-xyz.a.run.app" if t.tag else ""))
        svc.traffic_statuses = statuses
        svc.observed_generation = svc.generation
        svc.reconciling = False

    def _new_revision(self, svc: run_v2.Service, short: str, max_instances: int | None) -> None:
        location_prefix = svc.name.rsplit("/services/", 1)[0]
        full = f"{location_prefix}/revisions/{short}"
        gen = self._tick()
        rev = run_v2.Revision(name=full, uid=f"uid-{short}", generation=1, service=svc.name,
                              create_time=_ts(gen), update_time=_ts(gen), etag=f'W/"r{gen}"',
                              labels={"cloud.googleapis.com/location": location_prefix.rsplit("/", 1)[-1]})
        if max_instances:
            rev.scaling = run_v2.RevisionScaling(max_instance_count=max_instances)
        self._revisions[full] = rev
        svc.latest_created_revision = full
        svc.latest_ready_revision = full
        svc.template = run_v2.RevisionTemplate(revision=short)

    def _targets(self, spec: TrafficSpec) -> list[run_v2.TrafficTarget]:
        if isinstance(spec, Mapping):
            return [run_v2.TrafficTarget(type_=REVISION, revision=r, percent=p) for r, p in spec.items()]
        return [run_v2.TrafficTarget(type_=REVISION, revision=r, percent=p, tag=tag) for r, p, tag in spec]

    def _service(self, name: str) -> run_v2.Service:
        if name in self._services:
            return self._services[name]
        matches = [s for full, s in self._services.items() if _short(full) == name]
        if len(matches) != 1:
            raise KeyError(f"no single service named {name}")
        return matches[0]

    def _check_traffic(self, svc: run_v2.Service, targets: Iterable[run_v2.TrafficTarget]) -> str:
        """The real API's validation; returns a message, or "" when valid."""
        targets = list(targets)
        total = sum(t.percent for t in targets)
        if targets and total != 100:
            return f"traffic percents must total 100, got {total}"
        tags = [t.tag for t in targets if t.tag]
        if len(tags) != len(set(tags)):
            return "traffic tags must be unique"
        prefix = svc.name.rsplit("/services/", 1)[0]
        for t in targets:
            if t.percent < 0:
                return "negative percent"
            if t.type_ == REVISION and f"{prefix}/revisions/{t.revision}" not in self._revisions:
                return f"revision {t.revision} not found"
            if t.type_ not in (REVISION, LATEST):
                return "traffic target type must be set"
        return ""

    def _finish(self, op: _Op) -> None:
        if op.error is None and op.apply is not None:
            op.apply()
        if op.error is not None and op.on_fail is not None:
            op.on_fail()
        op.done = True

    def _complete_pending_for(self, service_name: str) -> None:
        """Time passes for a reader: the control plane finishes an operation whether or not anyone
        polls it, so a later read of the service sees the reconciled state."""
        if not self.complete_on_read:
            return
        for op in self._ops.values():
            if not op.done and op.resource == service_name:
                self._finish(op)

    def _new_op(self, resource: str, response: Any, apply: Any, on_fail: Any = None) -> operations_pb2.Operation:
        location_prefix = resource.split("/services/")[0].split("/revisions/")[0]
        name = f"{location_prefix}/operations/op-{self._tick():06d}"
        op = _Op(name, response, apply, on_fail, self.lro_polls_to_done, error=self._fail_next_lro)
        self._fail_next_lro = None
        op.resource = resource
        self._ops[name] = op
        meta = any_pb2.Any()
        meta.Pack(type(response).pb(response))
        return operations_pb2.Operation(name=name, done=False, metadata=meta)

    # ------------------------------------------------------------------ handlers
    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.add(method, request)
        self.faults.apply(method, context)

    def _principal(self, method: str, context: grpc.ServicerContext) -> str:
        """Who is calling: Google authenticates the bearer token; here a test table maps it."""
        header = next((value for key, value in context.invocation_metadata() if key == "authorization"), "")
        if not header:
            principal = self.anonymous_principal
        elif header.startswith("Bearer ") and header[7:] in self.tokens:
            principal = self.tokens[header[7:]]
        else:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")
        self.callers.append((method, principal))
        return principal

    def _audit(self, request: run_v2.UpdateServiceRequest, principal: str, operation: str) -> None:
        """What the Logging sink publishes for an accepted update (outside the lock: it may block)."""
        if self.audit_sink is None:
            return
        from google.protobuf import json_format

        from simulations.audit_sink import update_service_entry

        project, location, service = request.service.name.split("/")[1::2]
        at = self.clock.now() if self.clock is not None else datetime.now(timezone.utc)
        entry = update_service_entry(
            project=project, location=location, service=service, principal=principal, at=at, operation_id=operation,
            request_service=json_format.MessageToDict(run_v2.Service.pb(request.service)),
            update_mask=list(request.update_mask.paths))
        self.audit_sink(entry)

    def _get_service(self, request: run_v2.GetServiceRequest, context: grpc.ServicerContext) -> run_v2.Service:
        self._enter("GetService", request, context)
        with self._lock:
            svc = self._services.get(request.name)
            if svc is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            self._complete_pending_for(svc.name)
            return run_v2.Service.deserialize(run_v2.Service.serialize(svc))

    def _list_services(self, request: run_v2.ListServicesRequest,
                       context: grpc.ServicerContext) -> run_v2.ListServicesResponse:
        self._enter("ListServices", request, context)
        project, _, location = request.parent.removeprefix("projects/").partition("/locations/")
        with self._lock:
            names = sorted(n for n in self._services
                           if n.startswith(f"projects/{project}/locations/")
                           and (location == "-" or n.split("/")[3] == location))
            page, token = _page(names, request.page_size, request.page_token, context)
            for n in page:
                self._complete_pending_for(n)
            return run_v2.ListServicesResponse(services=[self._services[n] for n in page], next_page_token=token)

    def _update_service(self, request: run_v2.UpdateServiceRequest,
                        context: grpc.ServicerContext) -> operations_pb2.Operation:
        self._enter("UpdateService", request, context)
        principal = self._principal("UpdateService", context)
        operation = self._update_locked(request, context)
        if operation.name:
            self._audit(request, principal, operation.name)
        return operation

    def _update_locked(self, request: run_v2.UpdateServiceRequest,
                       context: grpc.ServicerContext) -> operations_pb2.Operation:
        wanted = request.service
        with self._lock:
            svc = self._services.get(wanted.name)
            if svc is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{wanted.name}' was not found")
            if wanted.etag and wanted.etag != svc.etag:
                context.abort(grpc.StatusCode.ABORTED,
                              f"Conflict for resource '{_short(svc.name)}': version '{wanted.etag}' was "
                              f"specified but current version is '{svc.etag}'.")
            for key in {**wanted.labels, **wanted.annotations}:
                if key.startswith(RESERVED_PREFIXES):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reserved label/annotation {key}")
            problem = self._check_traffic(svc, wanted.traffic)
            if problem:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            if request.validate_only:
                return operations_pb2.Operation(name="", done=True)
            # The spec changes at once (a GET shows the new traffic and etag, reconciling=True);
            # traffic_statuses catch up when the operation completes.
            split_before = _split(svc)
            svc.traffic = list(wanted.traffic) or [run_v2.TrafficTarget(type_=LATEST, percent=100)]
            svc.labels = dict(wanted.labels)
            svc.annotations = dict(wanted.annotations)
            self._bump(svc)
            svc.reconciling = True
            self.accepted_updates.append((_short(svc.name), _split(svc), dict(svc.annotations)))
            if _split(svc) != split_before:
                self.traffic_changes.append((_short(svc.name), _split(svc), dict(svc.annotations)))
                self.resource_traffic_changes.append((svc.name, _split(svc)))
            target = svc

            def complete() -> None:
                if not self.stall_reconcile:
                    self._settle(target)

            def failed() -> None:
                target.reconciling = False  # serving state stays as it was (statuses unchanged)

            return self._new_op(svc.name, svc, complete, failed)

    def _get_operation(self, request: operations_pb2.GetOperationRequest,
                       context: grpc.ServicerContext) -> operations_pb2.Operation:
        self._enter("GetOperation", request, context)
        with self._lock:
            op = self._ops.get(request.name)
            if op is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"operation {request.name} not found")
            if not op.done:
                op.polls_left -= 1
                if op.polls_left <= 0:
                    self._finish(op)
            response = type(op.response).pb(op.response)
            meta = any_pb2.Any()
            meta.Pack(response)
            out = operations_pb2.Operation(name=op.name, done=op.done, metadata=meta)
            if op.done:
                if op.error is not None:
                    out.error.CopyFrom(status_pb2.Status(code=FAULT_CODES[op.error[0]].value[0],
                                                         message=op.error[1]))
                else:
                    packed = any_pb2.Any()
                    packed.Pack(response)
                    out.response.CopyFrom(packed)
            return out

    def _get_revision(self, request: run_v2.GetRevisionRequest, context: grpc.ServicerContext) -> run_v2.Revision:
        self._enter("GetRevision", request, context)
        with self._lock:
            rev = self._revisions.get(request.name)
            if rev is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            return rev

    def _list_revisions(self, request: run_v2.ListRevisionsRequest,
                        context: grpc.ServicerContext) -> run_v2.ListRevisionsResponse:
        self._enter("ListRevisions", request, context)
        with self._lock:
            if request.parent not in self._services:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.parent}' was not found")
            names = [n for n, r in self._revisions.items() if r.service == request.parent]
            names.reverse()  # newest first, as the real API lists them
            page, token = _page(names, request.page_size, request.page_token, context)
            return run_v2.ListRevisionsResponse(revisions=[self._revisions[n] for n in page],
                                                next_page_token=token)

    def _delete_revision(self, request: run_v2.DeleteRevisionRequest,
                         context: grpc.ServicerContext) -> operations_pb2.Operation:
        self._enter("DeleteRevision", request, context)
        with self._lock:
            rev = self._revisions.get(request.name)
            if rev is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            if request.etag and request.etag != rev.etag:
                context.abort(grpc.StatusCode.ABORTED, "revision etag mismatch")
            svc = self._services.get(rev.service)
            short = _short(rev.name)
            if svc is not None and any(t.revision == short for t in svc.traffic):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Revision {short} is referenced by the service's traffic and cannot be deleted")
            if request.validate_only:
                return operations_pb2.Operation(name="", done=True)
            name = rev.name
            return self._new_op(name, rev, lambda: self._revisions.pop(name, None))


def _split(svc: run_v2.Service) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in svc.traffic:
        rev = t.revision if t.type_ == REVISION else _short(svc.latest_ready_revision)
        out[rev] = out.get(rev, 0) + t.percent
    return out


def previous_latest(svc: run_v2.Service) -> str:
    return _short(svc.latest_ready_revision)


def _page(names: list[str], page_size: int, token: str, context: grpc.ServicerContext) -> tuple[list[str], str]:
    """Offset-token paging; page_size 0 means the server default (100)."""
    try:
        start = int(token) if token else 0
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page token")
    size = page_size if page_size > 0 else 100
    end = start + size
    return names[start:end], (str(end) if end < len(names) else "")
