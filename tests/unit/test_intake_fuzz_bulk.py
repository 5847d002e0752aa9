"""Bulk fuzzing of every intake: at least 100,000 hypothesis-generated cases per slow run.

Each hypothesis example is a list of byte-level mutations (replace, delete, insert) that is applied
to every valid base message of every intake (native events of each kind and bucket layout, v1 and v2
audit entries, a Monitoring incident, a command), so one example makes one case per base. Cheap
strategies keep 100k cases within a couple of minutes; the structural mutations of
test_intake_fuzz.py go deeper on fewer cases. Whatever comes in: no exception escapes, every
rejection has a precise reason, and every accepted event survives the codec round trip.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.unit.test_intake_examples import SINK_ATTRIBUTES
from tests.unit.test_intake_fuzz import AUDIT_BASES, COMMAND_BASES, INCIDENT_BASES, NATIVE_BASES, _check

BASES: list[tuple[bytes, object]] = (
    [(json.dumps(b).encode(), None) for b in NATIVE_BASES]
    + [(json.dumps(b).encode(), SINK_ATTRIBUTES) for b in AUDIT_BASES]
    + [(json.dumps(b).encode(), None) for b in INCIDENT_BASES + COMMAND_BASES]
)
MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255), st.integers(0, 2)), max_size=5)
CASES_REQUIRED = 100_000
EXAMPLES = -(-CASES_REQUIRED // len(BASES))  # ceil: every example makes len(BASES) cases


def _mutate(base: bytes, mutations: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(base)
    for position, byte, op in mutations:
        at = position % max(1, len(data))
        if op == 0 and data:
            data[at] = byte
        elif op == 1 and data:
            del data[at]
        else:
            data.insert(at, byte)
    return bytes(data)


def _run(examples: int) -> int:
    cases = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(MUTATIONS)
    def fuzz(mutations: list[tuple[int, int, int]]) -> None:
        nonlocal cases
        for base, attributes in BASES:
            _check(_mutate(base, mutations), attributes)
            cases += 1

    fuzz()
    return cases


def test_bulk_mutations_default_run() -> None:
    assert _run(100) >= 100 * len(BASES)


@pytest.mark.slow
def test_bulk_mutations_100k_cases() -> None:
    cases = _run(EXAMPLES)
    assert cases >= CASES_REQUIRED, cases
