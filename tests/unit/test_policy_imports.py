"""policies/ is pure: importing the loader, the CLI functions and the diff pulls in no Google
client library, no plotting library and no threads (checked in a fresh interpreter)."""
from __future__ import annotations

import subprocess
import sys


def test_policy_modules_import_light() -> None:
    code = (
        "import sys, threading; before = threading.active_count()\n"
        "import policies, policies.loader, policies.cli, policies.diff, policies.model, policies.yamldoc\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'google', 'matplotlib', 'grpc', 'numpy'})\n"
        "assert not heavy, heavy\n"
        "assert threading.active_count() == before\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
