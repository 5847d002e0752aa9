"""HealthServer over a real loopback socket: /metrics exposes the registry in Prometheus text format,
/healthz follows alive(), /readyz follows ready() with the reason in the body, unknown paths 404."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from daemon.adapters.http_server import HealthServer
from daemon.telemetry import PrometheusTelemetry


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


class Switch:
    """What the server asks: flipped by the test between requests."""

    def __init__(self) -> None:
        self.ready = (False, "connecting to projects/p/subscriptions/s")
        self.alive = True

    def ready_fn(self) -> tuple[bool, str]:
        if isinstance(self.ready, Exception):
            raise self.ready
        return self.ready


@pytest.fixture
def served() -> Iterator[tuple[HealthServer, Switch, PrometheusTelemetry]]:
    telemetry = PrometheusTelemetry(CollectorRegistry())
    switch = Switch()
    server = HealthServer(0, registry=telemetry.registry, ready=switch.ready_fn, alive=lambda: switch.alive,
                          host="127.0.0.1")
    try:
        yield server, switch, telemetry
    finally:
        server.stop()


def test_port_zero_picks_a_free_port_and_two_servers_coexist(served) -> None:
    server, _, _ = served
    other = HealthServer(0, registry=CollectorRegistry(), ready=lambda: (True, ""), host="127.0.0.1")
    try:
        assert server.port > 0 and other.port > 0 and server.port != other.port
        assert other.start() is other  # the daemon calls start() again after building it: harmless
        assert get(other.url + "/readyz")[0] == 200
    finally:
        other.stop()


def test_metrics_exposes_the_registry_in_prometheus_format(served) -> None:
    server, _, telemetry = served
    telemetry.decision("rollback")
    telemetry.decision("rollback")
    telemetry.event("metrics", "accepted")
    telemetry.rollouts({"2": 3})
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[("rollbackd_decisions_total", (("action", "rollback"),))] == 2
    assert samples[("rollbackd_rollbacks_total", ())] == 2
    assert samples[("rollbackd_events_total", (("result", "accepted"), ("type", "metrics")))] == 1
    assert samples[("rollbackd_active_rollouts", (("phase", "2"),))] == 3
    # Only the registry given: a metric on another registry does not leak in.
    Counter("rollbackd_elsewhere", "not ours", registry=CollectorRegistry()).inc()
    assert "rollbackd_elsewhere" not in get(server.url + "/metrics")[2]


def test_healthz_follows_alive(served) -> None:
    server, switch, _ = served
    assert get(server.url + "/healthz")[:1] == (200,)
    assert get(server.url + "/healthz")[2] == "ok\n"
    switch.alive = False
    assert get(server.url + "/healthz")[0] == 503


def test_readyz_follows_ready_and_says_why(served) -> None:
    server, switch, _ = served
    status, _, body = get(server.url + "/readyz")
    assert status == 503 and "connecting to projects/p/subscriptions/s" in body
    switch.ready = (True, "subscribed, policy loaded, evaluated 12s ago")
    status, _, body = get(server.url + "/readyz")
    assert status == 200 and "evaluated 12s ago" in body
    switch.ready = RuntimeError("engine lock poisoned")
    status, _, body = get(server.url + "/readyz")
    assert status == 503 and "engine lock poisoned" in body and "Traceback" not in body


def test_unknown_path_is_404_and_query_strings_are_ignored(served) -> None:
    server, _, _ = served
    assert get(server.url + "/nope")[0] == 404
    assert get(server.url + "/healthz?verbose=1")[0] == 200


def test_concurrent_scrapes_and_stop_releases_the_port(served) -> None:
    server, switch, _ = served
    switch.ready = (True, "ok")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(get(server.url + "/metrics")[0])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 8
    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    # the fixture's stop() runs again: stopping twice must be harmless
