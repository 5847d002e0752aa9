"""A pre-imported `rollbackd` process that forks sandbox daemons on request, so crash trials can
SIGKILL real processes without paying ~2 s of imports for every start.

Used by `tests.reliability.sandbox_procs`. The zygote imports the CLI, the sandbox and their
dependencies once, then reads one JSON request per line on stdin and answers one JSON line:

    {"op": "run", "argv": [...], "stdout": PATH, "stderr": PATH, "crash_at": "apply:2"}  -> {"pid": N}
    {"op": "wait", "pid": N, "timeout_s": T}        -> {"rc": code | null (still running)}
    {"op": "kill", "pid": N}                        -> {"rc": -9}
    {"op": "quit"}

Each child is a fresh process running exactly `rollbackd <argv>` (daemon.cli.main), with its
stdout/stderr redirected to files. `crash_at` names a deterministic crash point: the child
SIGKILLs itself at that point (see CRASH_POINTS), the way a power cut or an OOM kill would.
The zygote itself never runs a daemon, so it holds no threads when it forks.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Callable

# Where a deterministic crash may be placed: "name:N" kills the process at the N-th time (1-based)
# the point is reached.
#   decision-journaled   right after the N-th decision is durably journaled, before it is acted on
#   before-apply         right before the N-th traffic change reaches the simulated Cloud Run
#   after-apply          right after the N-th traffic change landed (before notify, error logs)
#   world-published      right after the world published its N-th event (before it saved itself)
#   world-saved          right after the world saved its N-th minute
CRASH_POINTS = ("decision-journaled", "before-apply", "after-apply", "world-published", "world-saved")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_crash_point(spec: str) -> None:
    """Patch the (already imported) sandbox classes so the process SIGKILLs itself at `spec`."""
    name, _, count_text = spec.partition(":")
    if name not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {name}")
    target = int(count_text or "1")
    seen = {"n": 0}

    def hit() -> None:
        seen["n"] += 1
        if seen["n"] >= target:
            _die()

    from daemon.adapters.journal import FileJournal
    from daemon.sandbox import SandboxWorld
    from simulations.sandbox_cloud import SimulatedCloudRun

    def wrap(cls: Any, method: str, before: Callable[..., bool] | None = None,
             after: Callable[..., bool] | None = None) -> None:
        original = getattr(cls, method)

        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            if before is not None and before(self, *args, **kwargs):
                hit()
            result = original(self, *args, **kwargs)
            if after is not None and after(self, *args, **kwargs):
                hit()
            return result
        setattr(cls, method, patched)

    is_decision = lambda self, record, **kw: record.get("type") == "decision"  # noqa: E731
    always = lambda *a, **kw: True  # noqa: E731
    if name == "decision-journaled":
        wrap(FileJournal, "write", after=is_decision)
    elif name == "before-apply":
        wrap(SimulatedCloudRun, "apply", before=always)
    elif name == "after-apply":
        wrap(SimulatedCloudRun, "apply", after=always)
    elif name == "world-published":
        original_init = SandboxWorld.__init__

        def init(self: Any, services: Any, cloud: Any, publish: Any, *args: Any, **kwargs: Any) -> None:
            def publishing(data: bytes, source: str) -> None:
                publish(data, source)
                hit()
            original_init(self, services, cloud, publishing, *args, **kwargs)
        SandboxWorld.__init__ = init  # type: ignore[method-assign]
    elif name == "world-saved":
        wrap(SandboxWorld, "_save", after=always)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: redirect output, arm the crash point, run the CLI, exit."""
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdin = open(os.devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    code = 1
    try:
        if request.get("crash_at"):
            install_crash_point(request["crash_at"])
        from daemon.cli import main
        code = main(request["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def main() -> None:
    # Everything a sandbox run imports, once. The child starts from here.
    import daemon.adapters.journal  # noqa: F401
    import daemon.bootstrap  # noqa: F401
    import daemon.cli  # noqa: F401
    import daemon.cli_run  # noqa: F401
    import daemon.sandbox
    import simulations.replay  # noqa: F401
    from actions import notify  # noqa: F401
    from policies import load_default_policy

    daemon.sandbox.load_services("default", daemon.sandbox.DEFAULT_START)
    load_default_policy()
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "run":
            pid = os.fork()
            if pid == 0:
                try:
                    _child(request)
                finally:
                    os._exit(1)
            reply: dict[str, Any] = {"pid": pid}
        elif op == "wait":
            reply = {"rc": _wait(int(request["pid"]), float(request.get("timeout_s", 0)))}
        elif op == "kill":
            try:
                os.kill(int(request["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
            reply = {"rc": _wait(int(request["pid"]), 10.0)}
        elif op == "quit":
            return
        else:
            reply = {"error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
