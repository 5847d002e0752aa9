"""What the world sends the live daemon in the end-to-end tests and benchmarks: deploy audit
entries and per-minute revision metrics that follow the traffic split the daemon has set.

- `audit_replace_service(...)`: the LogEntry a log sink delivers for `gcloud run deploy SERVICE
  --no-traffic --tag=canary` (v1 ReplaceService, gcp-formats.md example (a)).
- `TrafficFeeder`: a closed-loop traffic model on the test's virtual clock. Every minute boundary it
  reads the Cloud Run fake's CURRENT split and emits one `Metrics` minute per serving revision
  through a sink: `monitoring_sink` (into the Monitoring fake, metrics_mode monitoring) or
  `pubsub_sink` (native `metrics` events on the emulator, metrics_mode pubsub).

Re-exported by `tests.integration.live_harness`; used by test_live_e2e*.py and benchmarks/.
"""
from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import numpy as np

from daemon.core.events import Metrics
from daemon.core.timefmt import format_rfc3339
from detectors.histogram import Histogram

PROJECT = "shop-e2e"
LOCATION = "europe-west1"
DEPLOYER = "ci-deploy@shop-e2e.iam.gserviceaccount.com"


def audit_replace_service(service: str, revision: str, baseline: str, at: datetime, *, project: str = PROJECT,
                          location: str = LOCATION, principal: str = DEPLOYER,
                          generation: int = 41) -> dict[str, Any]:
    """The LogEntry a log sink delivers for `gcloud run deploy SERVICE --no-traffic --tag=canary`
    (gcp-formats.md example (a), with this test's names and times)."""
    stamp = format_rfc3339(at)
    return {
        "insertId": uuid.uuid4().hex[:10],
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": principal},
            "methodName": "google.cloud.run.v1.Services.ReplaceService",
            "serviceName": "run.googleapis.com",
            "resourceName": f"namespaces/{project}/services/{service}",
            "request": {
                "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
                "name": f"projects/{project}/locations/{location}/services/{service}",
                "region": location,
                "service": {
                    "apiVersion": "serving.knative.dev/v1", "kind": "Service",
                    "metadata": {"name": service, "namespace": "123456789012", "generation": generation,
                                 "labels": {"cloud.googleapis.com/location": location}},
                    "spec": {"template": {"metadata": {"name": revision},
                                          "spec": {"containers": [{"image": f"{location}-docker.pkg.dev/"
                                                                   f"{project}/app/{service}@sha256:9f2c"}]}},
                             "traffic": [{"revisionName": baseline, "percent": 100},
                                         {"revisionName": revision, "tag": "canary"}]}}},
            "requestMetadata": {"callerSuppliedUserAgent": "google-cloud-sdk gcloud/528.0.0 command/gcloud.run.deploy"},
            "resourceLocation": {"currentLocations": [location]},
            "response": {
                "@type": "type.googleapis.com/google.cloud.run.v1.Service",
                "metadata": {"name": service, "generation": generation + 1},
                "status": {"observedGeneration": generation, "latestCreatedRevisionName": baseline,
                           "latestReadyRevisionName": baseline,
                           "traffic": [{"revisionName": baseline, "percent": 100}]}},
        },
        "receiveTimestamp": stamp,
        "resource": {"type": "cloud_run_revision",
                     "labels": {"project_id": project, "service_name": service, "location": location,
                                "configuration_name": "", "revision_name": ""}},
        "severity": "NOTICE",
        "timestamp": stamp,
    }


# --- metrics ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RevisionProfile:
    """How one revision behaves: its 5xx share and log-normal latency."""

    error_ratio: float = 0.0
    latency_median_ms: float = 100.0
    latency_sigma: float = 0.5
    memory: float = 0.4


LATENCY_LAYOUT = (64, 1.4, 1.0)  # exponential buckets: 1 ms x 1.4^k, up to ~2.2e9 ms


def latency_histogram(n: int, profile: RevisionProfile, rng: np.random.Generator) -> Histogram | None:
    """`n` requests' latencies as a Cloud Monitoring exponential distribution (multinomial over the
    log-normal's bucket probabilities, so it costs the same for 10 or 10 million requests)."""
    if n <= 0:
        return None
    buckets, growth, scale = LATENCY_LAYOUT
    edges = [scale * growth ** k for k in range(buckets + 1)]
    mu, sigma = math.log(profile.latency_median_ms), profile.latency_sigma
    cdf = [0.5 * (1 + math.erf((math.log(e) - mu) / (sigma * math.sqrt(2)))) for e in edges]
    probs = np.diff([0.0, *cdf, 1.0])
    counts = rng.multinomial(n, np.clip(probs, 0, None) / probs.clip(0, None).sum())
    return Histogram.exponential(buckets, growth, scale, [int(c) for c in counts])


def monitoring_sink(fake: Any) -> Callable[[Metrics], None]:
    """Write a `Metrics` minute into the Monitoring fake as Cloud Run would report it."""
    def write(m: Metrics) -> None:
        fake.add_minute(m.service, m.revision, m.time, by_class=dict(m.requests_by_class), latency_hist=m.latency,
                        memory=m.memory_utilization, cpu=m.cpu_utilization, instances=m.instance_count,
                        project=m.project or None, location=m.location or None)
    return write


def pubsub_sink(publisher: Any) -> Callable[[Metrics], None]:
    """Publish each minute as a native `metrics` event (metrics_mode pubsub or both) through a
    `live_harness.Publisher`."""
    return lambda m: publisher.publish_metrics(m)


@dataclass
class _Fed:
    profiles: dict[str, RevisionProfile]
    rps: float


class TrafficFeeder:
    """Closed-loop traffic: at every virtual minute boundary T it reads each service's traffic split
    from the Cloud Run fake and emits one `Metrics` minute (ending at T) per revision that had a
    share, through `sink`. Requests ~ Poisson(rps x 60 x share), errors ~ Binomial. A revision at 0%
    gets no points, as in Cloud Monitoring."""

    def __init__(self, clock: Any, cloud_run: Any, sink: Callable[[Metrics], None], *, project: str = PROJECT,
                 location: str = LOCATION, seed: int = 7) -> None:
        self.clock, self.cloud_run, self.sink = clock, cloud_run, sink
        self.project, self.location = project, location
        self.rng = np.random.default_rng(seed)
        self.services: dict[str, _Fed] = {}
        self.minutes_fed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, service: str, profiles: Mapping[str, RevisionProfile], rps: float = 20.0) -> None:
        with self._lock:
            self.services[service] = _Fed(dict(profiles), rps)

    def set_profile(self, service: str, revision: str, profile: RevisionProfile) -> None:
        with self._lock:
            self.services[service].profiles[revision] = profile

    def minute(self, at: datetime) -> list[Metrics]:
        """Emit the minute ending at `at` for every fed service; returns what was emitted."""
        emitted: list[Metrics] = []
        with self._lock:
            fed = {name: _Fed(dict(f.profiles), f.rps) for name, f in self.services.items()}
        for service, f in fed.items():
            split = self._split_of(service)
            for revision, percent in split.items():
                if percent <= 0:
                    continue
                profile = f.profiles.get(revision, RevisionProfile())
                n = int(self.rng.poisson(f.rps * 60 * percent / 100))
                errors = int(self.rng.binomial(n, profile.error_ratio)) if n else 0
                classes = tuple((c, k) for c, k in (("2xx", n - errors), ("5xx", errors)) if k)
                emitted.append(Metrics(time=at, service=service, revision=revision, interval_s=60,
                                       requests_by_class=classes, latency=latency_histogram(n, profile, self.rng),
                                       memory_utilization=profile.memory, cpu_utilization=0.3, instance_count=2,
                                       project=self.project, location=self.location))
        for m in emitted:
            self.sink(m)
        self.minutes_fed += 1
        return emitted

    def _split_of(self, service: str) -> dict[str, int]:
        """The split of this feeder's own service (project, location, name): a service of the same
        name in another region is fed by another feeder. Services added under other names than the
        feeder's location are found by their short name."""
        try:
            full = f"projects/{self.project}/locations/{self.location}/services/{service}"
            return self.cloud_run.traffic_of(full)
        except KeyError:
            return self.cloud_run.traffic_of(service)

    def start(self) -> "TrafficFeeder":
        self._thread = threading.Thread(target=self._run, name="traffic-feeder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        now = self.clock.now()
        at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while not self._stop.is_set():
            self.clock.sleep_until(at, self._stop)
            if self._stop.is_set():
                return
            try:
                self.minute(at)
            except Exception as error:  # noqa: BLE001 - reported to the test, the feeder keeps going
                self.errors.append(f"{at}: {type(error).__name__}: {error}")
            at += timedelta(minutes=1)
