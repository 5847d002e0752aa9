"""From a Pub/Sub message to engine submissions: parse, resolve, filter, submit.

Used by the live daemon and the sandbox (whose events may also travel through the Pub/Sub
emulator). The message is acknowledged by the caller only after `handle()` returns, i.e. after the
input, its decisions and the new state are journaled and the actions are done. Unparseable input
is journaled as rejected and returns normally, so it is acknowledged once: no poison loop.

Each Pub/Sub subscription hands its messages in with its `source` ("audit", "incidents",
"metrics"; `daemon.core.intake`): a message of another format is refused with a reason. What comes
from Cloud Run is believed only as Cloud Run says it now:
- a deploy's labels (which choose a policy override) are the service's own, read with GetService,
  never the event's;
- a command (an audit entry of an update that wrote the `rollbackd.dev/command` annotation) is
  acted on only if the service, read back now, carries the same command id (so an update that
  failed later, an etag conflict or a failed operation, never acts), the service is managed, and it
  was issued within the policy's `commands.max_command_age`.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Mapping

from daemon.core import sanity
from daemon.core.command_annotation import command_id_on
from daemon.core.events import Alert, Command, Deploy, Ignored, Metrics, Rejected
from daemon.ports import ActionError, TransientError
from daemon.core.intake import parse_message

log = logging.getLogger("rollbackd.dispatch")


class Dispatcher:
    def __init__(self, engine: Any, *, clock: Any, traffic: Any, own_principals: frozenset[str],
                 managed: Callable[[str, str, str], bool], accept_metrics: bool = True,
                 default_project: str = "", default_location: str = "") -> None:
        self.engine = engine
        self.clock = clock
        self.traffic = traffic
        self.own_principals = own_principals
        self.managed = managed
        self.accept_metrics = accept_metrics
        self.default_project = default_project
        self.default_location = default_location

    def source(self, name: str) -> Callable[..., None]:
        """`handle` for one subscription (what `PubSubEventSource` calls)."""
        def handle(data: bytes, attributes: Mapping[str, str] | None = None, message_id: str = "",
                   publish_time: datetime | None = None, delivery_attempt: int | None = None) -> None:
            self.handle(data, attributes, message_id, publish_time, delivery_attempt, source=name)
        return handle

    def handle(self, data: bytes, attributes: Mapping[str, str] | None = None, message_id: str = "",
               publish_time: datetime | None = None, delivery_attempt: int | None = None, *,
               source: str = "audit") -> None:
        now = self.clock.now()
        where = f"message {message_id}" if message_id else ""
        # The current policy's sane ranges (event times, intervals, free-text length) apply at intake.
        ranges = sanity.ranges_from(self.engine.policy_for("").limits)
        parsed = parse_message(data, attributes, now=now, own_principals=self.own_principals, where=where,
                               ranges=ranges, source=source)
        if isinstance(parsed, (Rejected, Ignored)):
            self.engine.reject(parsed, received_at=now)
            return
        for event in parsed:
            if isinstance(event, Metrics) and not self.accept_metrics:
                self.engine.reject(Ignored("metrics events ignored: metrics_mode is monitoring", where),
                                   received_at=now)
                continue
            if isinstance(event, Deploy):
                resolved = self._resolve(event, where, now)
                if resolved is None:
                    continue
                event = resolved
            if isinstance(event, Command):
                confirmed = self._confirm(event, where, now)
                if confirmed is None:
                    continue
                event = confirmed
            service = getattr(event, "service", None)
            if service and not isinstance(event, (Deploy, Metrics)) and not self._known(event):
                # Another replica may run this service's rollout: read its record before deciding
                # that there is none (a command must not be lost to the replica that got it).
                self._read_back(service, getattr(event, "location", "") or self.default_location)
            if isinstance(event, Alert) and service and not self._known(event) and self._managed_alert(event):
                # An incident on a managed service before any rollout: it blocks the next canary.
                event = replace(event, project=event.project or self.default_project,
                                location=event.location or self.default_location)
            elif service and not isinstance(event, Deploy) and not self._known(event) \
                    and not (isinstance(event, Command) and event.action.startswith("kill-switch")):
                # Only a deploy of a managed service creates state: everything else about a
                # service rollbackd has never rolled out is noted and left alone.
                self.engine.reject(Ignored(f"{event.kind} for {service}, which has no rollout", where),
                                   received_at=now)
                continue
            self.engine.submit(event, received_at=now)

    def _confirm(self, event: Command, where: str, now: datetime) -> Command | None:
        """The command as Cloud Run has it now, or None (refused, journaled with the reason)."""
        max_age_s = self.engine.policy_for(event.service).commands.max_command_age
        if (now - event.time).total_seconds() > max_age_s:
            self.engine.reject(Ignored(f"command {event.action} for {event.service} by {event.by}: issued "
                                       f"{event.time.isoformat()}, older than commands.max_command_age", where),
                               received_at=now)
            return None
        project = event.project or self.default_project
        location = event.location or self.default_location
        try:
            view = self.traffic.get_service(project, location, event.service)
        except TransientError:
            raise  # nacked: redelivered once Cloud Run answers
        except ActionError as error:
            self.engine.reject(Rejected(f"command {event.action} for {event.service}: cannot read the service "
                                        f"back: {error}", where, kind_hint="command"), received_at=now)
            return None
        if command_id_on(view.annotations) != event.command_id:
            self.engine.reject(Rejected(
                f"command {event.action} for {event.service} by {event.by}: command {event.command_id} is not "
                "on the service (the update failed or was replaced); not acted on", where, kind_hint="command"),
                received_at=now)
            return None
        if not self.managed(project, location, event.service):
            self.engine.reject(Ignored(f"command for {event.service}, which rollbackd does not manage", where),
                               received_at=now)
            return None
        return replace(event, project=project, location=location)

    def _known(self, event: Any) -> bool:
        """Whether the engine has state for the event's service (by project, location and name; an
        ambiguous name counts as known, so the engine rejects it with its reason)."""
        key = self.engine.identify(event)
        return key is not None and (isinstance(key, Rejected) or key in self.engine.states)

    def _read_back(self, service: str, location: str) -> None:
        if not (self.default_project and location):
            return
        try:
            view = self.traffic.get_service(self.default_project, location, service)
        except TransientError:
            raise  # nacked: redelivered once Cloud Run answers
        except ActionError:
            return
        if self.managed(self.default_project, location, service):
            self.engine.read_back([view], "resync")

    def _managed_alert(self, event: Alert) -> bool:
        project = event.project or self.default_project
        location = event.location or self.default_location
        if not (project and location and event.service):
            return False
        try:
            return bool(self.managed(project, location, event.service))
        except TransientError:
            raise
        except ActionError:
            return False

    def _resolve(self, event: Deploy, where: str, now: datetime) -> Deploy | None:
        """Fill in what an audit entry may lack (revision, baseline, labels) from Cloud Run, and
        drop deploys of services rollbackd does not manage."""
        project = event.project or self.default_project
        location = event.location or self.default_location
        try:
            view = self.traffic.get_service(project, location, event.service)
        except TransientError:
            # Cloud Run is briefly unavailable: the deploy must not be lost. Raising nacks the
            # message, and Pub/Sub redelivers it (the read already retried with backoff).
            raise
        except ActionError as error:
            self.engine.reject(Rejected(f"cannot read service {event.service} to resolve the deploy: {error}",
                                        where, kind_hint="deploy"), received_at=now)
            return None
        if not self.managed(project, location, event.service):
            self.engine.reject(Ignored(f"{event.service} is not managed by rollbackd", where), received_at=now)
            return None
        revision = event.revision or view.latest_created_revision
        canary_percent = event.canary_percent
        if event.revision is None or canary_percent is None:
            canary_percent = view.percent_of(revision)
        baseline = event.baseline
        if not baseline:
            serving = sorted((t for t in view.traffic if t.revision != revision and t.percent > 0),
                             key=lambda t: -t.percent)
            baseline = serving[0].revision if serving else None
        return replace(event, revision=revision, baseline=baseline, canary_percent=canary_percent,
                       project=project, location=location,
                       # The service's own labels choose its policy override, never the event's.
                       labels=tuple(sorted(view.labels.items())))
