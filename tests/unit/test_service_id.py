"""Services are identified by project, location and name (issue 11, item 8): the identity type, the
one rule that resolves an event naming a service without a region, the engine keeping same-named
services in two regions apart (and refusing to guess), and recordings without a location, which
keep replaying to the same decisions. Through the real Engine with the simulated Cloud Run."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from daemon.bootstrap import build, engine_factory
from daemon.clock import VirtualClock
from daemon.core.commands import ANNOTATION_PREFIX as P
from daemon.core.events import Command, Deploy, Rejected
from daemon.core.service_id import ServiceId, resolve, several_locations
from daemon.engine import Engine
from policies import load_default_policy
from simulations.replay import decision_line, replay_file
from simulations.sandbox_cloud import SimulatedCloudRun

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
POLICY = load_default_policy()
SRE = "sre@olympuscloud.ai"
US = ServiceId("shop", "us-central1", "checkout")
EU = ServiceId("shop", "europe-west1", "checkout")
CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "simulations", "recordings")


# --- the identity type ----------------------------------------------------------------------------

def test_its_text_is_the_cloud_run_resource_name_and_parses_back() -> None:
    assert str(US) == "projects/shop/locations/us-central1/services/checkout"
    assert ServiceId.parse(str(US)) == US
    assert ServiceId.parse("checkout", project="shop", location="us-central1") == US
    assert str(ServiceId("", "", "checkout")) == "checkout"  # an old recording's service
    assert US.label(with_location=True) == "checkout (us-central1)" and US.label(with_location=False) == "checkout"
    assert several_locations([US, EU]) and not several_locations([US, ServiceId("shop", "us-central1", "api")])
    with pytest.raises(ValueError):
        ServiceId.parse("projects/shop/services/checkout")


_PART = st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs", "Zs", "Cc")),
                min_size=1, max_size=20)


@given(_PART, _PART, _PART)
def test_any_resource_name_round_trips(project: str, location: str, name: str) -> None:
    service = ServiceId(project, location, name)
    assert ServiceId.parse(str(service)) == service


# --- the one rule for an event that does not say where --------------------------------------------

def test_resolve_picks_the_only_one_and_refuses_to_guess_between_two() -> None:
    assert resolve("checkout", "", "us-central1", [US, EU]) == US
    assert resolve("checkout", "", "", [US]) == US
    assert resolve("checkout", "", "", [], default_project="shop", default_location="europe-west1") == EU
    ambiguous = resolve("checkout", "", "", [US, EU], where="message 7")
    assert isinstance(ambiguous, Rejected) and ambiguous.where == "message 7"
    assert "more than one location" in ambiguous.reason
    assert str(US) in ambiguous.reason and str(EU) in ambiguous.reason
    # An old recording's deploy named no region; its incident does: the same service.
    unplaced = ServiceId("", "", "checkout")
    assert resolve("checkout", "shop", "us-central1", [unplaced]) == unplaced
    # A region nobody knows yet is a new service there.
    assert resolve("checkout", "", "asia-east1", [US], default_project="shop") == ServiceId("shop", "asia-east1",
                                                                                             "checkout")


# --- the engine: two regions, one name -------------------------------------------------------------

def _engine(**defaults: str) -> tuple[Engine, SimulatedCloudRun]:
    cloud = SimulatedCloudRun()
    for service, baseline in ((US, "checkout-00007-usa"), (EU, "checkout-00041-mib")):
        cloud.ensure_service(service.name, project=service.project, location=service.location)
        cloud.set_traffic_by_hand(str(service), {baseline: 100})
    return build("replay", policy=lambda: POLICY, traffic=cloud, clock=VirtualClock(T0), **defaults), cloud


def _deploy(service: ServiceId, canary: str, baseline: str, at: datetime) -> Deploy:
    return Deploy(time=at, service=service.name, revision=canary, baseline=baseline, project=service.project,
                  location=service.location)


def test_same_named_services_in_two_regions_are_two_rollouts_and_a_command_must_name_one() -> None:
    eng, cloud = _engine(default_project="shop")
    eng.submit(_deploy(US, "checkout-00008-usb", "checkout-00007-usa", T0))
    eng.submit(_deploy(EU, "checkout-00042-vux", "checkout-00041-mib", T0 + timedelta(seconds=1)))
    assert set(eng.states) == {US, EU}
    assert cloud.traffic_of(str(US)) == {"checkout-00007-usa": 95, "checkout-00008-usb": 5}
    assert cloud.traffic_of(str(EU)) == {"checkout-00041-mib": 95, "checkout-00042-vux": 5}

    # A pause that does not say which `checkout`: rejected with its reason, nothing changes.
    out = eng.submit(Command(time=T0 + timedelta(minutes=1), service="checkout", action="pause", by=SRE))
    assert not out.decisions and "more than one location" in out.rejected[0].reason
    assert not any(state.rollout.paused for state in eng.states.values() if state.rollout)

    # Naming the region pauses that one only, and it is saved on that service only.
    out = eng.submit(Command(time=T0 + timedelta(minutes=2), service="checkout", action="pause", by=SRE,
                             location="europe-west1"))
    [pause] = out.decisions
    assert (pause.action, pause.location, pause.project) == ("hold", "europe-west1", "shop")
    assert json.loads(decision_line(pause, "x"))["location"] == "europe-west1"
    assert eng.states[EU].rollout.paused and not eng.states[US].rollout.paused
    assert cloud.service(str(EU)).annotations[f"{P}paused"] == "true"
    assert cloud.service(str(US)).annotations.get(f"{P}paused") != "true"


def test_an_engine_restored_from_the_services_keeps_them_apart() -> None:
    eng, cloud = _engine()
    eng.submit(_deploy(US, "checkout-00008-usb", "checkout-00007-usa", T0))
    eng.submit(_deploy(EU, "checkout-00042-vux", "checkout-00041-mib", T0))
    again = build("replay", policy=lambda: POLICY, traffic=cloud, clock=VirtualClock(T0 + timedelta(minutes=1)))
    again.read_back(cloud.list_services(), "restore")
    assert {key: state.rollout.canary for key, state in again.states.items()} == {
        US: "checkout-00008-usb", EU: "checkout-00042-vux"}


# --- recordings and journals without a location keep working ------------------------------------

OLD_FORMAT = [  # as recordings were written before services had a region (no project, no location)
    {"type": "deploy", "time": "2025-03-03T14:00:00Z", "service": "checkout", "revision": "checkout-2",
     "baseline": "checkout-1", "canary_percent": 0, "source": "native"},
    {"type": "command", "time": "2025-03-03T14:01:00Z", "service": "checkout", "action": "pause", "by": SRE,
     "reason": "looking"},
    {"type": "command", "time": "2025-03-03T14:02:00Z", "service": "checkout", "action": "abort", "by": SRE},
]


def test_an_old_format_recording_replays_with_no_location_in_its_decisions(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "old.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in OLD_FORMAT)
    result = replay_file(path, POLICY, build_engine=engine_factory("replay"))
    assert [d.action for d in result.decisions] == ["promote", "hold", "rollback"]
    assert not result.rejected
    for decision in result.decisions:
        assert {"location", "project"}.isdisjoint(json.loads(decision_line(decision, "old")))
    assert set(result.engine.states) == {ServiceId("", "", "checkout")}


def test_a_corpus_recording_whose_incident_names_a_region_its_deploy_did_not() -> None:
    """alert-phase3.jsonl: the deploy has no location, the incident's resource says us-central1.
    One service, and the incident rolls it back, as before services had a region."""
    result = replay_file(os.path.join(CORPUS, "alert-phase3.jsonl"), POLICY, build_engine=engine_factory("replay"))
    assert [key.name for key in result.engine.states] == ["checkout"]
    assert any(d.action == "rollback" and d.trigger == "alert-open" for d in result.decisions)


# --- reports, what-if and explain name the region when there are several ----------------------------

def test_reports_name_the_region_when_a_recording_has_several() -> None:
    from simulations.backtest import rows_from_result
    from simulations.explain import explain_decision
    from simulations.replay import replay_events
    from simulations.report_data import collect
    from simulations.whatif import compare_replays

    events = [_deploy(US, "checkout-00008-usb", "checkout-00007-usa", T0),
              _deploy(EU, "checkout-00042-vux", "checkout-00041-mib", T0),
              Command(time=T0 + timedelta(minutes=1), service="checkout", action="abort", by=SRE,
                      location="us-central1")]
    result = replay_events(events, POLICY, build_engine=engine_factory("replay"), keep_journal=True)
    assert {row.service: row.outcome for row in rows_from_result(result)} == {
        "checkout (us-central1)": "rolled_back", "checkout (europe-west1)": "in_progress"}
    assert sorted(data.service for data in collect(result)) == ["checkout (europe-west1)",
                                                                 "checkout (us-central1)"]
    text = compare_replays(result, result, new_name="a", old_name="b")
    assert "-- checkout (us-central1): NEW rolled_back" in text and "-- checkout (europe-west1):" in text
    rollback = next(i for i, d in enumerate(result.decisions) if d.action == "rollback")
    assert "checkout (us-central1)" in explain_decision(result.decisions, rollback, result.journal, POLICY)
