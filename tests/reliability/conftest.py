"""Fixtures for the reliability suite (issue 5): the integration fixtures (Pub/Sub emulator, Cloud
Run/Logging fakes, virtual clock) re-exported, plus a session-wide sandbox zygote."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.integration.conftest import *  # noqa: F401,F403 - the emulator and the gRPC fakes
from tests.reliability.sandbox_procs import Zygote

# The integration tier's marker hook is for its own directory; do not register it a second time here.
del pytest_collection_modifyitems  # noqa: F821


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()
