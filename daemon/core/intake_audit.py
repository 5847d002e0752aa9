"""Cloud Audit Log entries for run.googleapis.com (delivered by a Logging sink to Pub/Sub) as
`Deploy` or `TrafficChanged` events. Called by `daemon.core.intake.parse_message`.

Handled methods: v1 `google.cloud.run.v1.Services.ReplaceService` / `CreateService` (what
`gcloud run deploy` and `gcloud run services update-traffic` write) and v2
`google.cloud.run.v2.Services.UpdateService` / `CreateService` (client libraries, Terraform, and
rollbackd itself). Anything else from Cloud Run is `Ignored`. See
shared/reference/gcp-formats.md §1a for the shapes.

Heuristics, in order (the audit entry is written at request time, before Cloud Run reconciles, so
it says what was asked for, not what happened; the live path confirms with `get_service`):

1. Not an outcome we act on → Ignored: severity ERROR or worse, or `protoPayload.status.code`
   non-zero ("failed operation"); the `operation.last` entry of a v2 long-running operation (the
   `first` entry already said the same: "duplicate"); a principal in `own_principals` ("own
   update", so rollbackd never reacts to its own traffic changes).
2. The new revision's name: v1 `request.service.spec.template.metadata.name`; v2
   `request.service.template.revision`. In v1 only, when the template is unnamed, a *tagged*
   `spec.traffic` entry at 0% for a revision the response does not yet list is the new revision
   (`gcloud run deploy --no-traffic --tag`).
3. Traffic-only changes → `TrafficChanged(canary_percent=None)`; the core decides if it matters:
   - v1: the user agent says `update-traffic`, or the named template revision already existed
     (the response's pre-reconcile `latestCreatedRevisionName` equals it: a ReplaceService that
     re-sends the current template, as `update-traffic` does);
   - v2: an `updateMask` that does not touch `template`;
   - both: no revision name found, and a traffic list present, unless the user agent says
     `gcloud run deploy` or `services update` (those re-send the traffic they fetched).
4. A command (`daemon.core.command_annotation`): the request writes a `rollbackd.dev/command`
   annotation (v2 `request.service.annotations`, v1 `request.service.metadata.annotations`). It
   becomes a `Command` whose principal is the entry's verified `principalEmail` (never the
   annotation's text); an entry without one is refused. An update whose mask touches only
   annotations or labels (what `rollbackd ctl` sends) is that command and nothing else; a full
   update that also carries the annotation (a later deploy re-sending it) is the command plus the
   deploy or traffic change (the command is then a duplicate or expired, see the dispatcher).
   An annotations-only update without a command changes nothing rollbackd acts on: Ignored.
5. Otherwise a `Deploy`. No revision name → `revision=None` (`needs_resolution`). Its
   `canary_percent` is its share in the request's traffic list (absent from the list, or listed
   without a percent, is 0%), plus any "latest revision" entry's share (the new revision becomes
   the latest); no traffic list → unknown (None) for updates, 100 for creates (Cloud Run's
   default for a new service). The `baseline` is the named revision other than the new one with
   the largest percent in the request (first listed on a tie), else in the v1 response status.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Mapping

from daemon.core.command_annotation import COMMAND_ANNOTATION, decode
from daemon.core.events import Command, Deploy, Event, TrafficChanged
from daemon.core.intake_fields import (
    Bad, Skip, Window, as_int, obj_at, parse_time, sane_time, short, str_at, type_name, wrong,
)

RUN = "run.googleapis.com"
V1_METHODS = {
    "google.cloud.run.v1.Services.ReplaceService": "replace",
    "google.cloud.run.v1.Services.CreateService": "create",
}
V2_METHODS = {
    "google.cloud.run.v2.Services.UpdateService": "update",
    "google.cloud.run.v2.Services.CreateService": "create",
}
# Update-mask fields that change neither the template nor the traffic.
_METADATA_ONLY = frozenset({"annotations", "labels", "description", "client", "client_version"})
FAILED_SEVERITIES = frozenset({"ERROR", "CRITICAL", "ALERT", "EMERGENCY"})
LATEST_TYPES = ("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", 1, "1")
# gcloud names its command in the user agent, e.g. "... command/gcloud.run.deploy".
_UA_UPDATE_TRAFFIC = re.compile(r"command/gcloud\.(?:alpha\.|beta\.)?run\.services\.update-traffic")
_UA_DEPLOY = re.compile(r"command/gcloud\.(?:alpha\.|beta\.)?run\.(?:deploy|services\.update)(?![\w-])")


class _Target:
    """One traffic entry, normalised across v1 (`revisionName`, `latestRevision`) and v2 (`revision`,
    `type`)."""

    __slots__ = ("revision", "percent", "tag", "latest")

    def __init__(self, revision: str | None, percent: int | None, tag: str, latest: bool) -> None:
        self.revision, self.percent, self.tag, self.latest = revision, percent, tag, latest

    def describe(self) -> str:
        name = self.revision or ("LATEST" if self.latest else "?")
        tag = f" (tag {self.tag})" if self.tag else ""
        return f"{name}={self.percent or 0}%{tag}"


def parse_audit(entry: Mapping[str, Any], attributes: Mapping[str, str] | None, *, window: Window,
                own_principals: frozenset[str]) -> list[Event]:
    payload = entry["protoPayload"]
    if not isinstance(payload, dict):
        raise wrong("audit.protoPayload", "an object", payload)
    method, api, verb = _method(payload)
    _skip_non_outcomes(entry, payload)
    principal = str_at(payload, "authenticationInfo", "principalEmail")
    if principal and principal in own_principals:
        raise Skip(f"own update by {principal}")

    when = _entry_time(entry, attributes, window)
    request = _object(payload.get("request"), "audit.protoPayload.request")
    service_obj = _object(request.get("service"), "audit.protoPayload.request.service")
    labels = obj_at(entry, "resource", "labels")
    service, project, location = _names(entry, payload, request, service_obj,
                                        labels if isinstance(labels, dict) else {}, api)
    user_agent = str_at(payload, "requestMetadata", "callerSuppliedUserAgent")

    annotations = obj_at(service_obj, "metadata", "annotations") if api == "v1" else service_obj.get("annotations")
    commands: list[Event] = []
    if isinstance(annotations, dict) and COMMAND_ANNOTATION in annotations:
        if not principal:
            raise Bad("audit: a command annotation written without an authenticated principal")
        request_ = decode(annotations[COMMAND_ANNOTATION], window, f"audit.request.service.annotations.{COMMAND_ANNOTATION}")
        commands.append(Command(time=request_.issued, service=service, action=request_.action, by=principal,
                                reason=request_.reason, command_id=request_.command_id, project=project,
                                location=location))
    paths = _mask_paths(request.get("updateMask", request.get("update_mask")))
    if paths is not None and paths and all(p.split(".")[0] in _METADATA_ONLY for p in paths):
        if commands:
            return commands
        raise Skip("an update of annotations or labels only: no deploy, no traffic change")

    served: list[_Target] | None = None
    if api == "v1":
        traffic = _traffic(obj_at(service_obj, "spec", "traffic"), "v1", "audit.request.service.spec.traffic")
        revision = _nonempty(obj_at(service_obj, "spec", "template", "metadata", "name"))
        served = _traffic(obj_at(payload, "response", "status", "traffic"), "v1",
                          "audit.response.status.traffic")
        known = str_at(payload, "response", "status", "latestCreatedRevisionName")
        traffic_only = (_UA_UPDATE_TRAFFIC.search(user_agent) is not None
                        or (revision is not None and revision == known))
        if revision is None and not traffic_only:
            revision = _tagged_new(traffic, served, known)
        service_labels = obj_at(service_obj, "metadata", "labels")
    else:
        traffic = _traffic(service_obj.get("traffic"), "v2", "audit.request.service.traffic")
        revision = _nonempty(obj_at(service_obj, "template", "revision"))
        traffic_only = paths is not None and not any(p == "template" or p.startswith("template.")
                                                     for p in paths)
        service_labels = service_obj.get("labels")

    if (not traffic_only and revision is None and traffic is not None and verb != "create"
            and _UA_DEPLOY.search(user_agent) is None):
        traffic_only = True  # the task's rule: no new revision named, but traffic sent
    if traffic_only:
        detail = f"{method.rsplit('.', 1)[-1]} by {principal or 'unknown principal'}"
        if traffic:
            detail += ": " + ", ".join(t.describe() for t in traffic)
        return commands + [TrafficChanged(time=when, service=service, canary_percent=None, principal=principal,
                                          detail=detail)]
    return commands + [Deploy(
        time=when, service=service, revision=revision,
        baseline=_baseline(traffic, revision) or _baseline(served, revision),
        project=project, location=location,
        canary_percent=_canary_percent(traffic, revision, verb),
        principal=principal, source=f"audit-{api}",
        labels=_string_labels(service_labels),
    )]


def _method(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """(methodName, api version, verb); Skip for other services and methods."""
    service_name = payload.get("serviceName")
    if service_name is not None and service_name != RUN:
        raise Skip(f"audit entry for {short(service_name)}, not {RUN}")
    method = payload.get("methodName")
    if not isinstance(method, str) or not method:
        raise wrong("audit.protoPayload.methodName", "a non-empty string", method)
    if method in V1_METHODS:
        return method, "v1", V1_METHODS[method]
    if method in V2_METHODS:
        return method, "v2", V2_METHODS[method]
    raise Skip(f"audit method {short(method, 80)} is not a deploy")


def _skip_non_outcomes(entry: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    severity = entry.get("severity")
    if isinstance(severity, str) and severity.upper() in FAILED_SEVERITIES:
        raise Skip(f"failed operation (severity {severity})")
    status = payload.get("status")
    if isinstance(status, dict) and status.get("code") not in (None, 0, "0", "OK"):
        raise Skip(f"failed operation (status code {short(status.get('code'))}: "
                   f"{short(str_at(status, 'message'), 120)})")
    operation = entry.get("operation")
    if isinstance(operation, dict) and operation.get("last") is True and operation.get("first") is not True:
        raise Skip("duplicate: last entry of a long-running operation")


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise wrong(path, "an object", value)
    return value


def _string_labels(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        return ()
    return tuple(sorted((k, v) for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)))


def _entry_time(entry: Mapping[str, Any], attributes: Mapping[str, str] | None, window: Window) -> datetime:
    # The entry's own timestamp is when the request happened; the Pub/Sub attribute and the
    # receive timestamp are later and only stand in when it is missing.
    if entry.get("timestamp") is not None:
        return sane_time(parse_time(entry["timestamp"], "audit.timestamp"), window, "audit.timestamp")
    attr = attributes.get("logging.googleapis.com/timestamp") if attributes else None
    if attr is not None:
        path = "attributes.logging.googleapis.com/timestamp"
        return sane_time(parse_time(attr, path), window, path)
    if entry.get("receiveTimestamp") is not None:
        return sane_time(parse_time(entry["receiveTimestamp"], "audit.receiveTimestamp"), window,
                          "audit.receiveTimestamp")
    raise Bad("audit.timestamp: missing (and no logging.googleapis.com/timestamp attribute)")


def _names(entry: Mapping[str, Any], payload: Mapping[str, Any], request: Mapping[str, Any],
           service_obj: Mapping[str, Any], labels: Mapping[str, Any], api: str) -> tuple[str, str, str]:
    """Service, project and location from the resource labels, else from resource names."""
    paths = [str_at(request, "name"), str_at(service_obj, "name"), str_at(payload, "resourceName"),
             str_at(request, "parent")]
    service = _nonempty(labels.get("service_name"))
    if service is None:
        candidates = [_segment(p, "services") for p in paths]
        candidates += [_nonempty(request.get("serviceId")), _nonempty(request.get("service_id"))]
        if api == "v1":
            candidates.append(_nonempty(obj_at(service_obj, "metadata", "name")))
        service = next((c for c in candidates if c), None)
    if service is None:
        raise Bad("audit: no service name in resource.labels.service_name, the request or resourceName")
    project = (_nonempty(labels.get("project_id")) or _first_segment(paths, "projects")
               or _segment(str_at(entry, "logName"), "projects") or "")
    location = (_nonempty(labels.get("location")) or _nonempty(request.get("region"))
                or _first_segment(paths, "locations")
                or _nonempty(obj_at(service_obj, "metadata", "labels", "cloud.googleapis.com/location"))
                or "")
    return service, project, location


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _segment(path: str, collection: str) -> str | None:
    """The id after `collection/` in a resource path such as projects/P/locations/R/services/S."""
    parts = path.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == collection and parts[i + 1]:
            return parts[i + 1]
    return None


def _first_segment(paths: list[str], collection: str) -> str | None:
    return next((s for s in (_segment(p, collection) for p in paths) if s), None)


def _traffic(raw: Any, api: str, path: str) -> list[_Target] | None:
    """The traffic list, or None when the request has none."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise Bad(f"{path}: expected an array, got {type_name(raw)}")
    targets = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise Bad(f"{path}[{i}]: expected an object, got {type_name(item)}")
        pct_raw = item.get("percent")
        pct = None if pct_raw is None else as_int(pct_raw, f"{path}[{i}].percent")
        if pct is not None and not 0 <= pct <= 100:
            raise Bad(f"{path}[{i}].percent: {pct} is not a percent between 0 and 100")
        if api == "v1":
            revision, latest = _nonempty(item.get("revisionName")), item.get("latestRevision") is True
        else:
            revision, latest = _nonempty(item.get("revision")), item.get("type") in LATEST_TYPES
        tag = item.get("tag")
        tag = tag if isinstance(tag, str) else ""
        targets.append(_Target(revision, pct, tag, latest and revision is None))
    return targets


def _tagged_new(traffic: list[_Target] | None, served: list[_Target] | None, known: str) -> str | None:
    """v1 without a template name: a tagged 0% entry for a revision the service did not list yet."""
    listed = {t.revision for t in served or []} | {known}
    for target in traffic or []:
        if target.tag and target.revision and not target.percent and target.revision not in listed:
            return target.revision
    return None


def _baseline(traffic: list[_Target] | None, revision: str | None) -> str | None:
    best: _Target | None = None
    for target in traffic or []:
        if target.revision and target.revision != revision and (target.percent or 0) > 0:
            if best is None or (target.percent or 0) > (best.percent or 0):
                best = target
    return best.revision if best else None


def _canary_percent(traffic: list[_Target] | None, revision: str | None, verb: str) -> int | None:
    if traffic is None:
        return 100 if verb == "create" else None
    share = sum(t.percent or 0 for t in traffic
                if t.latest or (revision is not None and t.revision == revision))
    return min(share, 100)


def _mask_paths(raw: Any) -> list[str] | None:
    """An update mask as JSON writes it ("a,b.c") or as a FieldMask object ({"paths": [...]})."""
    if isinstance(raw, str):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if isinstance(raw, dict) and isinstance(raw.get("paths"), list):
        return [p for p in raw["paths"] if isinstance(p, str)]
    return None
