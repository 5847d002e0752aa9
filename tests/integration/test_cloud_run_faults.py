"""Cloud API faults injected at the wire of the Cloud Run fake (issue 5 §4): transient faults are
retried with jittered backoff on the virtual clock within a bounded budget; conflicts re-read;
permanent faults stop at once and leave traffic as it was; nothing is applied twice."""
from __future__ import annotations

import time

import pytest

from actions.cloud_run import CloudRunTrafficController
from daemon.core.commands import SetTraffic
from daemon.ports import PermanentError, TransientError

pytestmark = pytest.mark.integration

BASE, CANARY = "checkout-00041-mib", "checkout-00042-vux"
SPLIT_5 = {BASE: 95, CANARY: 5}


@pytest.fixture
def service(cloud_run_fake):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE], labels={"rollbackd": "enabled"})
    cloud_run_fake.deploy_revision("checkout", CANARY)
    return "checkout"


@pytest.fixture
def make(run_clients, virtual_clock, rng):
    def build(**kwargs) -> CloudRunTrafficController:
        services, revisions = run_clients
        errors: list[tuple[str, str]] = []
        ctl = CloudRunTrafficController(services, revisions, clock=virtual_clock, rng=rng,
                                        on_error=lambda api, code: errors.append((api, code)), **kwargs)
        ctl.errors = errors  # type: ignore[attr-defined]
        return ctl
    return build


def to5() -> SetTraffic:
    return SetTraffic(service="checkout", project="shop", location="europe-west1", canary=CANARY, baseline=BASE,
                      canary_percent=5, expected_canary_percent=0, annotations={"rollbackd.dev/phase": "p5"},
                      reason="test", decision_id="d1")


def nonzero(split: dict[str, int]) -> dict[str, int]:
    return {r: p for r, p in split.items() if p}


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"])
@pytest.mark.parametrize("method", ["GetService", "UpdateService"])
def test_transient_faults_are_retried(cloud_run_fake, service, make, virtual_clock, code, method):
    ctl = make()
    started = virtual_clock.now()
    cloud_run_fake.faults.inject(method, code, times=2)
    assert ctl.apply(to5()).changed
    assert nonzero(cloud_run_fake.traffic_of(service)) == SPLIT_5
    assert len(cloud_run_fake.accepted_updates) == 1
    assert ctl.errors.count((f"run.{method}", code)) == 2
    # The backoff slept on the injected clock, never longer than the budget.
    slept_s = (virtual_clock.now() - started).total_seconds()
    assert 0 < slept_s <= ctl.retry_budget_s


def test_transient_fault_that_never_clears_exhausts_attempts(cloud_run_fake, service, make, virtual_clock):
    ctl = make(max_attempts=4, retry_budget_s=1000)
    cloud_run_fake.faults.inject("GetService", "UNAVAILABLE", times=-1)
    with pytest.raises(TransientError):
        ctl.apply(to5())
    assert cloud_run_fake.requests.count("GetService") == 4
    assert cloud_run_fake.requests.count("UpdateService") == 0
    assert nonzero(cloud_run_fake.traffic_of(service)) == {BASE: 100}


def test_retry_budget_bounds_the_time_spent(cloud_run_fake, service, make, virtual_clock):
    ctl = make(max_attempts=1000, retry_budget_s=30, backoff_base_s=4)
    cloud_run_fake.faults.inject("GetService", "RESOURCE_EXHAUSTED", times=-1)
    started = virtual_clock.now()
    with pytest.raises(TransientError):
        ctl.apply(to5())
    assert (virtual_clock.now() - started).total_seconds() <= 30
    assert 2 <= cloud_run_fake.requests.count("GetService") < 1000


@pytest.mark.parametrize("code", ["ABORTED", "FAILED_PRECONDITION"])
def test_conflict_rereads_and_redecides(cloud_run_fake, service, make, code):
    ctl = make()
    cloud_run_fake.faults.inject("UpdateService", code)
    assert ctl.apply(to5()).changed
    assert cloud_run_fake.requests.count("GetService") == 2  # re-read after the conflict
    assert len(cloud_run_fake.accepted_updates) == 1
    assert (("run.UpdateService", code)) in ctl.errors


@pytest.mark.parametrize("method,code", [("GetService", "PERMISSION_DENIED"), ("UpdateService", "PERMISSION_DENIED"),
                                         ("GetService", "NOT_FOUND"), ("UpdateService", "NOT_FOUND"),
                                         ("UpdateService", "INVALID_ARGUMENT")])
def test_permanent_faults_stop_at_once_and_leave_traffic(cloud_run_fake, service, make, method, code):
    ctl = make()
    cloud_run_fake.faults.inject(method, code, times=-1)
    with pytest.raises(PermanentError) as info:
        ctl.apply(to5())
    assert info.value.code == code and info.value.api == f"run.{method}"
    assert cloud_run_fake.requests.count(method) == 1  # no retry
    assert cloud_run_fake.accepted_updates == []
    assert nonzero(cloud_run_fake.traffic_of(service)) == {BASE: 100}


def test_deleted_service_is_permanent(cloud_run_fake, make):
    ctl = make()
    with pytest.raises(PermanentError) as info:
        ctl.apply(to5())  # no such service at all
    assert info.value.code == "NOT_FOUND"


def test_deleted_canary_revision_is_permanent(cloud_run_fake, service, make):
    cloud_run_fake.set_traffic_by_hand(service, {BASE: 100})
    ctl = make()
    cloud_run_fake.delete_revision_by_hand(CANARY)
    with pytest.raises(PermanentError):
        ctl.apply(to5())
    assert cloud_run_fake.accepted_updates == []


def test_slow_read_times_out_client_side_and_is_retried(cloud_run_fake, service, make):
    ctl = make(call_timeout_s=0.3)
    cloud_run_fake.faults.inject("GetService", None, delay_s=1.0)
    assert ctl.apply(to5()).changed
    assert ("run.GetService", "DEADLINE_EXCEEDED") in ctl.errors
    assert nonzero(cloud_run_fake.traffic_of(service)) == SPLIT_5


def test_slow_update_is_never_applied_twice(cloud_run_fake, service, make):
    # The first UpdateService is held on the server past the client's deadline; the retry re-reads
    # and sends again; when the held call finally runs its etag is stale and it is refused.
    ctl = make(call_timeout_s=0.3)
    cloud_run_fake.faults.inject("UpdateService", None, delay_s=1.2)
    assert ctl.apply(to5()).changed
    time.sleep(1.5)  # let the held call finish on the server (not a timing assertion)
    assert len(cloud_run_fake.accepted_updates) == 1
    assert cloud_run_fake.requests.count("UpdateService") == 2
    assert nonzero(cloud_run_fake.traffic_of(service)) == SPLIT_5


def test_lost_operation_reply_is_found_on_reread(cloud_run_fake, service, make):
    # UpdateService lands but polling its operation fails: the re-read shows our traffic, so no
    # second update is sent and the result still says the traffic changed.
    ctl = make()
    cloud_run_fake.faults.inject("GetOperation", "UNAVAILABLE")
    result = ctl.apply(to5())
    assert result.changed
    assert cloud_run_fake.requests.count("UpdateService") == 1
    assert nonzero(cloud_run_fake.status_traffic_of(service)) == SPLIT_5


def test_failed_operation_is_retried_by_resending(cloud_run_fake, service, make):
    ctl = make()
    cloud_run_fake.fail_next_operation("INTERNAL")
    assert ctl.apply(to5()).changed
    assert ("run.UpdateService", "INTERNAL") in ctl.errors
    assert nonzero(cloud_run_fake.status_traffic_of(service)) == SPLIT_5


def test_reconciliation_that_never_finishes_is_transient(cloud_run_fake, service, make):
    ctl = make(retry_budget_s=20)
    cloud_run_fake.stall_reconcile = True
    with pytest.raises(TransientError) as info:
        ctl.apply(to5())
    assert info.value.code == "RECONCILING"
    assert len(cloud_run_fake.accepted_updates) == 1  # waited; never re-sent


def test_operation_that_never_completes_times_out_on_the_clock(cloud_run_fake, service, make, virtual_clock):
    ctl = make(lro_timeout_s=10, lro_poll_s=2, max_attempts=1)
    cloud_run_fake.lro_polls_to_done = 10_000
    cloud_run_fake.complete_on_read = False
    started = virtual_clock.now()
    with pytest.raises(TransientError) as info:
        ctl.apply(to5())
    assert info.value.code == "LRO_TIMEOUT"
    assert 10 <= (virtual_clock.now() - started).total_seconds() <= 12
    assert cloud_run_fake.requests.count("GetOperation") == 6
