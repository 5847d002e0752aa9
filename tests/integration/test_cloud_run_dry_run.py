"""Dry-run never writes: proven with the Cloud Run fake's request log (issue 5 §8)."""
from __future__ import annotations

import pytest

from actions.cloud_run import CloudRunTrafficController
from actions.dry_run import DryRunTrafficController
from daemon.core.commands import DeleteRevision, SetTraffic

pytestmark = pytest.mark.integration

BASE, CANARY = "checkout-00041-mib", "checkout-00042-vux"


def test_dry_run_reads_but_never_updates_or_deletes(cloud_run_fake, run_clients, virtual_clock, rng):
    cloud_run_fake.add_service("checkout", "shop", "europe-west1", revisions=[BASE], labels={"rollbackd": "enabled"})
    cloud_run_fake.deploy_revision("checkout", CANARY)
    etag = cloud_run_fake.etag_of("checkout")
    services, revisions = run_clients
    real = CloudRunTrafficController(services, revisions, clock=virtual_clock, rng=rng,
                                     projects_locations=[("shop", "europe-west1")])
    dry = DryRunTrafficController(real)

    assert [v.name for v in dry.list_services()] == ["checkout"]
    expected = 0
    for pct in (5, 25, 50, 100, 0):
        result = dry.apply(SetTraffic("checkout", "shop", "europe-west1", CANARY, BASE, pct, expected,
                                      {"rollbackd.dev/phase": f"p{pct}"}, "dry", f"d{pct}"))
        assert not result.changed
        assert result.service is not None and result.service.percent_of(BASE) == 100
        expected = pct
    dry.delete_revision(DeleteRevision("checkout", "shop", "europe-west1", CANARY))

    assert cloud_run_fake.requests.count("UpdateService") == 0
    assert cloud_run_fake.requests.count("DeleteRevision") == 0
    assert cloud_run_fake.requests.count("GetService") >= 5  # it did read
    assert cloud_run_fake.etag_of("checkout") == etag
    assert [w.kind for w in dry.would_have] == ["set-traffic"] * 5 + ["delete-revision"]
    assert dry.would_have[0].current == {BASE: 100}
    assert "would set" in dry.would_have[0].note
