"""Hypothesis: whatever arrives, the intake returns events, Rejected or Ignored, never raises, and
never needs its catch-all ("internal parse error") — every rejection has a precise reason.

Inputs: random bytes, random JSON, and valid messages of each intake (native, audit, incident,
command) with random mutations (a field replaced by any JSON value, deleted, added, or the text
cut). Every event that comes out must survive the codec round trip, so a mutation that slips
through validation into a half-valid event is caught here too.

Default runs use a few hundred examples per intake; `-m slow` runs 2,000 structural mutations per
intake here, and tests/unit/test_intake_fuzz_bulk.py adds 100,000+ byte-level cases.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.core.codec import dumps_event
from daemon.core.events import Ignored, Rejected
from daemon.core.intake import parse_message
from tests.unit.test_intake_examples import (
    INCIDENT_OPEN, NATIVE_COMMAND, NATIVE_DEPLOY, NATIVE_METRICS, NOW, SINK_ATTRIBUTES, V1_REPLACE,
    V2_UPDATE,
)
from tests.unit.test_intake_native import ALERT, TRAFFIC

DEFAULT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))

_metrics = json.loads(NATIVE_METRICS)
_linear = copy.deepcopy(_metrics)
_linear["request_latencies"] = {"count": 3, "bucketOptions": {"linearBuckets": {"numFiniteBuckets": 5, "width": 100,
                                                                                "offset": 0}},
                                "bucketCounts": [0, 1, 2]}
_explicit = copy.deepcopy(_metrics)
_explicit["request_latencies"] = {"bucketOptions": {"explicitBuckets": {"bounds": [1, 10, 100]}},
                                  "bucketCounts": ["1", "0", "2", "0"], "count": "3"}
_explicit["request_count"] = {"5xx": 1, "total": 3}
NATIVE_BASES = [json.loads(NATIVE_DEPLOY), _metrics, _linear, _explicit, json.loads(ALERT), json.loads(TRAFFIC)]
AUDIT_BASES = [json.loads(V1_REPLACE), json.loads(V2_UPDATE)]
INCIDENT_BASES = [json.loads(INCIDENT_OPEN)]
COMMAND_BASES = [json.loads(NATIVE_COMMAND)]
OWN = frozenset({"canary-daemon@shop-prod.iam.gserviceaccount.com"})

# Values that sit on the validators' edges.
EDGE_VALUES = [
    None, True, False, 0, -1, 1, 101, 1.5, 1.51, -0.0, 2**63, -(2**63) - 1, 1e308, "", " ", "0", "-1", "1.5",
    "NaN", "Infinity", "12a", "2026-11-28T10:00:00Z", "2030-01-01T00:00:00Z", "2026-11-28T10:00:00",
    "open", "CLOSED", "test", "1.2", "pause", "kill-switch-on", "ERROR", "update-traffic", [], {}, [1, 2],
    {"paths": ["traffic"]}, "google.cloud.run.v1.Services.CreateService",
    "command/gcloud.run.services.update-traffic", "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
]
KEYS = ["type", "time", "service", "revision", "baseline", "total", "5xx", "count", "bucketCounts",
        "exponentialBuckets", "linearBuckets", "explicitBuckets", "operation", "last", "first", "status",
        "code", "severity", "version", "state", "ended_at", "updateMask", "tag", "percent", "revisionName",
        "canary_percent", "timestamp", "labels", "protoPayload", "incident"]

scalars = st.one_of(
    st.sampled_from(EDGE_VALUES), st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key-or-index) in a JSON document, depth first."""
    if isinstance(node, dict):
        for key in list(node):
            yield node, key
            yield from _slots(node[key])
    elif isinstance(node, list):
        for index in range(len(node)):
            yield node, index
            yield from _slots(node[index])


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> str:
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
        value = copy.deepcopy(draw(json_values))  # EDGE_VALUES holds shared lists and dicts
        if op == "replace":
            container[key] = value
        elif op == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = value
        else:
            container.insert(key, value)
    text = json.dumps(doc, allow_nan=True)  # NaN / Infinity literals on purpose
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=3)) + text[cut + 1:]
    return text


def _check(data: bytes | str, attributes: Any = None) -> None:
    result = parse_message(data, attributes, now=NOW, own_principals=OWN, where="fuzz")
    if isinstance(result, Rejected):
        assert not result.reason.startswith("internal parse error"), result.reason
        assert result.reason and result.where == "fuzz"
        return
    if isinstance(result, Ignored):
        assert result.reason and result.where == "fuzz"
        return
    assert isinstance(result, list) and result, result
    for event in result:
        back = parse_message(dumps_event(event), None, now=NOW, where="round trip")
        assert back == [event], (event, back)


# --- the bodies, shared by the default and the slow runs ------------------------------------------
def _native(text: str) -> None:
    _check(text.encode("utf-8", "surrogatepass"))


def _audit(text: str) -> None:
    _check(text, SINK_ATTRIBUTES)


def _incident(text: str) -> None:
    _check(text)


def _command(text: str) -> None:
    _check(text)


@DEFAULT
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@DEFAULT
@given(json_values, st.none() | st.dictionaries(st.text(max_size=40), st.text(max_size=30), max_size=2))
def test_random_json(value: Any, attributes: Any) -> None:
    _check(json.dumps(value), attributes)


@DEFAULT
@given(mutated(NATIVE_BASES))
def test_mutated_native(text: str) -> None:
    _native(text)


@DEFAULT
@given(mutated(AUDIT_BASES))
def test_mutated_audit(text: str) -> None:
    _audit(text)


@DEFAULT
@given(mutated(INCIDENT_BASES))
def test_mutated_incident(text: str) -> None:
    _incident(text)


@DEFAULT
@given(mutated(COMMAND_BASES))
def test_mutated_command(text: str) -> None:
    _command(text)


@pytest.mark.slow
@SLOW
@given(mutated(NATIVE_BASES))
def test_mutated_native_slow(text: str) -> None:
    _native(text)


@pytest.mark.slow
@SLOW
@given(mutated(AUDIT_BASES))
def test_mutated_audit_slow(text: str) -> None:
    _audit(text)


@pytest.mark.slow
@SLOW
@given(mutated(INCIDENT_BASES))
def test_mutated_incident_slow(text: str) -> None:
    _incident(text)


@pytest.mark.slow
@SLOW
@given(mutated(COMMAND_BASES))
def test_mutated_command_slow(text: str) -> None:
    _command(text)


def test_the_bases_are_valid() -> None:
    """The mutations start from valid messages; otherwise the fuzzing would only test rejections."""
    for base in NATIVE_BASES + AUDIT_BASES + INCIDENT_BASES + COMMAND_BASES:
        result = parse_message(json.dumps(base), SINK_ATTRIBUTES, now=NOW)
        assert isinstance(result, list) and result, (base, result)
