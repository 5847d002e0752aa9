"""Which Cloud Run services rollbackd manages: the managed label, or the policy's `managed` selectors.

One predicate for every place that decides it, so they cannot disagree: the Cloud Run traffic
controller (`actions.cloud_run`: which services `list_services` returns for start-up restore,
resync and `rollbackd status`, and the refusal before any write), the live dispatcher (which
deploys start a rollout, `daemon.live`), and the sandbox (`daemon.bootstrap`,
`simulations.sandbox_cloud`).

The rule, in order:
1. the opt-out label — the managed label's key with the value `disabled`, e.g. `rollbackd=disabled`
   — means not managed, whatever else matches (so an SRE can exclude one service from a selector);
2. the managed label itself (the setting `managed_label`, default `rollbackd=enabled`) means managed;
3. so does matching any of the policy's `managed` selectors (exact name or `prefix-*`, and/or labels).

Pure: no I/O, no clock. `ManagedPredicate` reads the policy through a callable on every call, so a
hot-reloaded policy (`daemon.runner.PolicyReloader`) takes effect at once.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from policies.model import ManagedSelector, Policy

OPT_OUT_VALUE = "disabled"
DEFAULT_LABEL: tuple[str, str] = ("rollbackd", "enabled")


def managed_because(service: str, labels: Mapping[str, str], *, label: tuple[str, str],
                    selectors: Sequence[ManagedSelector] = ()) -> str | None:
    """Why `service` is managed ('label rollbackd=enabled', 'managed selector 2 (service pay-*)'),
    or None when it is not."""
    key, value = label
    found = labels.get(key)
    if found == OPT_OUT_VALUE:
        return None
    if found == value:
        return f"label {key}={value}"
    for index, selector in enumerate(selectors):
        if selector.matches(service, labels):
            return f"managed selector {index + 1} ({selector.describe()})"
    return None


def is_managed(service: str, labels: Mapping[str, str], *, label: tuple[str, str],
               selectors: Sequence[ManagedSelector] = ()) -> bool:
    return managed_because(service, labels, label=label, selectors=selectors) is not None


def not_managed_because(service: str, labels: Mapping[str, str], *, label: tuple[str, str],
                        selectors: Sequence[ManagedSelector] = ()) -> str:
    """The sentence a refusal gives, for a service `is_managed` says no to."""
    key, value = label
    if labels.get(key) == OPT_OUT_VALUE:
        return f"it carries the opt-out label {key}={OPT_OUT_VALUE}"
    if not selectors:
        return f"it lacks the label {key}={value}"
    count = len(selectors)
    return (f"it lacks the label {key}={value} and matches none of the policy's {count} managed "
            f"selector{'s' if count != 1 else ''}")


class ManagedPredicate:
    """`predicate(service, labels) -> bool` over the managed label and the CURRENT policy's selectors.

    `policy` is called on every check (a `PolicyReloader` is such a callable); None, or a callable
    returning None, means the label alone decides.
    """

    def __init__(self, label: tuple[str, str] = DEFAULT_LABEL,
                 policy: Callable[[], Policy | None] | None = None) -> None:
        key, value = label
        if not key or not value or value == OPT_OUT_VALUE:
            raise ValueError(f"managed label must be key=value with a value other than '{OPT_OUT_VALUE}'")
        self.label = (key, value)
        self._policy = policy

    def selectors(self) -> tuple[ManagedSelector, ...]:
        policy = self._policy() if self._policy is not None else None
        return policy.managed if policy is not None else ()

    def __call__(self, service: str, labels: Mapping[str, str]) -> bool:
        return is_managed(service, labels, label=self.label, selectors=self.selectors())

    def because(self, service: str, labels: Mapping[str, str]) -> str | None:
        return managed_because(service, labels, label=self.label, selectors=self.selectors())

    def why_not(self, service: str, labels: Mapping[str, str]) -> str:
        return not_managed_because(service, labels, label=self.label, selectors=self.selectors())

    def describe(self) -> str:
        """'label rollbackd=enabled or 2 managed selectors', for `rollbackd status`."""
        key, value = self.label
        count = len(self.selectors())
        more = f" or {count} managed selector{'s' if count != 1 else ''} of the policy" if count else ""
        return f"label {key}={value}{more}"
