"""Fixtures for the integration tier: the real Pub/Sub emulator and the in-process gRPC fakes.

- `pubsub_emulator` (session): starts Google's Pub/Sub emulator on a free loopback port in its own
  process group, waits until it accepts connections, sets PUBSUB_EMULATOR_HOST for the session and
  kills the whole group afterwards (killing only the wrapper would leave the Java server running).
  If the emulator is missing, the tests fail under CI=true and skip elsewhere.
- `cloud_run_fake`, `logging_fake` (function): fresh fakes per test, with helpers to build the real
  google-cloud clients on a loopback channel (`run_clients`, `logging_client`).
- `virtual_clock`, `rng`: a VirtualClock (backoff sleeps cost no wall time) and a seeded Random.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from daemon.clock import VirtualClock
from tests.fakes.cloud_run import CloudRunFake
from tests.fakes.logging_fake import LoggingFake

EMULATOR_START_TIMEOUT_S = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is in the integration tier, marked or not."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def find_emulator() -> list[str] | None:
    """The command that runs the emulator directly (not through gcloud), or None when missing."""
    roots: list[Path] = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(os.path.realpath(gcloud)).parent.parent)
    roots.append(Path("/usr/lib/google-cloud-sdk"))
    for root in roots:
        script = root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if script.is_file() and shutil.which("java"):
            return [str(script)]
    if gcloud and shutil.which("java"):
        return [gcloud, "beta", "emulators", "pubsub", "start"]
    return None


def _die_with_parent() -> None:
    """In the child before exec: new session (its own process group) and, on Linux, SIGKILL when
    the test process dies, so a pytest killed by a timeout cannot orphan the Java server."""
    os.setsid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG; survives the wrapper's exec of java
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Pub/Sub emulator unavailable under CI: {reason}")
    pytest.skip(f"Pub/Sub emulator unavailable: {reason}")


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """The emulator's host:port; PUBSUB_EMULATOR_HOST points at it for the whole session."""
    command = find_emulator()
    if command is None:
        _missing("no cloud-pubsub-emulator script or gcloud with java on this machine")
        return
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
    if command[0].endswith("cloud-pubsub-emulator"):
        args = command + ["--host=127.0.0.1", f"--port={port}"]
    else:
        args = command + [f"--host-port=127.0.0.1:{port}", f"--data-dir={data_dir}"]
    log_path = Path(data_dir) / "emulator.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent, cwd=data_dir)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT_S
        while not _accepts(port):
            if proc.poll() is not None:
                _missing(f"emulator exited with {proc.returncode}: {log_path.read_text(errors='replace')[-500:]}")
            if time.monotonic() > deadline:
                _missing(f"emulator did not listen on {port} within {EMULATOR_START_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
        host = f"127.0.0.1:{port}"
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield host
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        _kill_group(proc)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the emulator's own process group (the Java server included); SIGKILL what is left."""
    try:
        pgid = os.getpgid(proc.pid)
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
    for _ in range(50):  # the wrapper may be gone while the JVM is still shutting down
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def cloud_run_fake() -> Iterator[CloudRunFake]:
    fake = CloudRunFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def logging_fake() -> Iterator[LoggingFake]:
    fake = LoggingFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def run_clients(cloud_run_fake: CloudRunFake) -> Iterator[tuple[object, object]]:
    """The real run_v2 ServicesClient and RevisionsClient on one loopback channel to the fake."""
    from google.cloud import run_v2
    from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport
    from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

    channel = grpc.insecure_channel(cloud_run_fake.address)
    services = run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))
    revisions = run_v2.RevisionsClient(transport=RevisionsGrpcTransport(channel=channel))
    try:
        yield services, revisions
    finally:
        channel.close()


@pytest.fixture
def logging_client(logging_fake: LoggingFake) -> Iterator[object]:
    """The real LoggingServiceV2Client on a loopback channel to the fake."""
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.logging_v2.services.logging_service_v2.transports import LoggingServiceV2GrpcTransport

    channel = grpc.insecure_channel(logging_fake.address)
    try:
        yield LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))
    finally:
        channel.close()
