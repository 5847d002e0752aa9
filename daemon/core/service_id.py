"""Which service: a Cloud Run service is identified by project, location and name, never by name alone.

Two services called `checkout` in us-central1 and europe-west1 are two rollouts. `ServiceId` is the
key of the engine's state, quarantine, labels and rate limits; journal lines, decision records and
the sandbox's simulated Cloud Run carry its parts. Its text is the Cloud Run resource name,
`projects/P/locations/L/services/N`, which `ServiceId.parse` reads back.

Old recordings and journals name services without a location (or a project). Their events get an
empty part, the placeholder for "the recording's only location": a recording written before this
change still replays to the same decisions, byte for byte. `resolve` is the one rule, used by the
engine for every mode, for an event that names a service without saying where: the one managed
service of that name, else the daemon's single location, and when the name is ambiguous (managed in
two locations) a `Rejected`, never a guess.

Pure: called by the engine, the dispatcher, `rollbackd status`, replay and the reports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from daemon.core.events import Rejected

_RESOURCE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/services/([^/]+)$")


@dataclass(frozen=True, slots=True, order=True)
class ServiceId:
    """A service's identity. `project` and `location` are "" when the source did not say (an old
    recording); such an id is only ever compared with ids from the same source."""

    project: str
    location: str
    name: str

    def __str__(self) -> str:
        if self.project and self.location:
            return f"projects/{self.project}/locations/{self.location}/services/{self.name}"
        if self.location:
            return f"{self.location}/{self.name}"
        return self.name

    @staticmethod
    def parse(text: str, *, project: str = "", location: str = "") -> "ServiceId":
        """`projects/P/locations/L/services/N`, or a bare name with the given project and location."""
        match = _RESOURCE.match(text.strip())
        if match:
            return ServiceId(match.group(1), match.group(2), match.group(3))
        if "/" in text:
            raise ValueError(f"not a service name or projects/P/locations/L/services/N: {text!r}")
        return ServiceId(project, location, text.strip())

    def label(self, *, with_location: bool) -> str:
        """How a human reads it: the name, with the region when more than one is in play."""
        return f"{self.name} ({self.location})" if with_location and self.location else self.name


def service_id_of(item: object) -> ServiceId:
    """The id of anything with `service`, `project` and `location` (an event, a state, a command,
    a rollout, a decision, a `ServiceView` whose `name` is the service's)."""
    name = getattr(item, "service", None)
    if not isinstance(name, str):
        name = getattr(item, "name", "")
    return ServiceId(getattr(item, "project", "") or "", getattr(item, "location", "") or "", name or "")


def resolve(name: str, project: str, location: str, known: Iterable[ServiceId], *,
            default_project: str = "", default_location: str = "", where: str = "") -> ServiceId | Rejected:
    """The service an event means. An empty part, on the event or on a known id, matches anything
    (it was not said). With a location: the known service there, else the one known service of
    that name whose location was never said (an old recording's deploy, then an incident that names
    its region), else a new id there. Without: the one known service of that name (and project,
    when given); none known, the default location; several, rejected: a command or an incident for
    `checkout` must not act on the wrong region."""
    fitting = [k for k in known if k.name == name and (not project or not k.project or k.project == project)]
    if location:
        exact = [k for k in fitting if k.location == location]
        unplaced = [k for k in fitting if not k.location]
        if len(exact) > 1:
            return _ambiguous(name, exact, "project", where)
        for candidates in (exact, unplaced):
            if len(candidates) == 1:
                return candidates[0]
        return ServiceId(project or default_project, location, name)
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        return _ambiguous(name, fitting, "location", where)
    return ServiceId(project or default_project, default_location, name)


def _ambiguous(name: str, candidates: list[ServiceId], part: str, where: str) -> Rejected:
    places = ", ".join(str(k) for k in sorted(candidates))
    return Rejected(f"service {name} is managed in more than one {part} ({places}); "
                    f"the event does not say which, so nothing is done", where)


def several_locations(ids: Iterable[ServiceId]) -> bool:
    """Whether the ids span more than one location: then every rendering names the region."""
    return len({i.location for i in ids}) > 1


__all__ = ["ServiceId", "resolve", "service_id_of", "several_locations"]
