"""The Dockerfile, built without Docker: there is no Docker engine on the development machines or in
CI, so this test reads the Dockerfile and carries out its steps in a fresh virtualenv.

- The image is what deploy.md promises: python:3.11-slim, a non-root USER, entrypoint
  `rollbackd run`, a HEALTHCHECK, and the exposed port is the one the daemon serves.
- Build: every COPY source is copied into a scratch build directory exactly as the Dockerfile lists
  them (so a module or data file the package needs but the Dockerfile forgets is missing here too),
  then the RUN step's `pip install .` runs in a fresh venv on this Python 3.11, and the build
  directory is deleted, as the image's `rm -rf /src` does. A non-editable install also proves the
  package data (policies, recordings, scenarios) is in the wheel.
- Run, from another directory with the image's ENV: the entrypoint with the image's default CMD
  and no config file fails with a one-line error and exit 2; the sandbox story runs to its end
  (checkout promoted to 100%, payments rolled back); a bundled recording replays; and the
  HEALTHCHECK command, run verbatim, succeeds against a running daemon and fails once it is gone.

Slow (a fresh install of the dependencies takes a minute or two, from pip's cache when warm).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def only(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions() if kw == keyword]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in only("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_image_shape_matches_the_deploy_guide() -> None:
    assert only("FROM") == ["python:3.11-slim"]
    users = only("USER")
    assert users and users[-1] not in ("root", "0"), "the daemon must not run as root"
    assert json.loads(only("ENTRYPOINT")[-1]) == ["rollbackd", "run"]
    healthcheck = only("HEALTHCHECK")
    assert healthcheck and " CMD " in f" {healthcheck[-1]} ", "a HEALTHCHECK with a command"
    assert only("EXPOSE") == [image_env()["ROLLBACKD_HTTP_PORT"]], "EXPOSE the port the daemon serves"
    for rest in only("COPY"):
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Dockerfile's build steps, carried out in a fresh venv; returns the venv and a work dir."""
    root = tmp_path_factory.mktemp("image")
    build = root / "src"
    build.mkdir()
    for rest in only("COPY"):
        *sources, destination = rest.split()
        target = build / destination if destination not in (".", "./") else build
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    runs = only("RUN")
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs), "the image installs the package"
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # --no-compile: byte-compiling every dependency is pip's start-up optimisation, not a behaviour
    # the image depends on (it runs without .pyc files too), and it is half of this install's time.
    subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "--no-compile", "."], cwd=build, check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=1500)
    shutil.rmtree(build)  # as `rm -rf /src`: nothing may depend on the source tree
    home = root / "home"
    home.mkdir()
    return {"venv": env_dir, "home": home}


def run_in_image(image: dict[str, Path], args: list[str], *, timeout: float = 300,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    bin_dir = image["venv"] / "bin"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(image["home"]), **image_env(), **(extra_env or {})}
    env["ROLLBACKD_JOURNAL"] = str(image["home"] / "journal.jsonl")  # the image's path, moved into the scratch home
    return subprocess.run(args, cwd=image["home"], env=env, capture_output=True, text=True, timeout=timeout)


def test_entrypoint_without_its_config_file_is_a_one_line_error(image: dict[str, Path]) -> None:
    cmd = json.loads(only("CMD")[-1])
    missing = str(image["home"] / "etc-rollbackd-config.yaml")
    args = json.loads(only("ENTRYPOINT")[-1]) + [missing if a.endswith("config.yaml") else a for a in cmd]
    result = run_in_image(image, args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


def test_sandbox_story_runs_from_the_installed_package(image: dict[str, Path]) -> None:
    result = run_in_image(image, ["rollbackd", "run", "--sandbox", "--speed", "600", "--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    decisions = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    final = {d["service"]: d for d in decisions if d.get("acted")}
    assert final["checkout"]["action"] == "promote" and final["checkout"]["canary_percent"] == 100
    assert final["payments"]["action"] == "rollback" and final["payments"]["canary_percent"] == 0


def test_bundled_recording_replays_from_the_installed_package(image: dict[str, Path]) -> None:
    python = str(image["venv"] / "bin" / "python")
    found = run_in_image(image, [python, "-c", "import simulations, pathlib; print(pathlib.Path("
                                 "simulations.__file__).parent / 'recordings' / 'errors-x5.jsonl')"])
    recording = found.stdout.strip()
    assert Path(recording).is_file(), f"recording not installed: {recording} {found.stderr}"
    result = run_in_image(image, ["rollbackd", "replay", recording, "--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(json.loads(line).get("action") == "rollback" for line in result.stdout.splitlines() if line.startswith("{"))


def test_healthcheck_command_follows_the_daemon(image: dict[str, Path]) -> None:
    port = free_port()
    healthcheck = only("HEALTHCHECK")[-1].split(" CMD ", 1)[1]
    bin_dir = image["venv"] / "bin"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(image["home"]), **image_env(),
           "ROLLBACKD_HTTP_PORT": str(port)}
    daemon = subprocess.Popen(["rollbackd", "run", "--sandbox", "--keep-running", "--speed", "60",
                               "--metrics-port", str(port)], cwd=image["home"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(["/bin/sh", "-c", healthcheck], env=env, capture_output=True, timeout=30)
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert check.returncode == 0, check.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    after = subprocess.run(["/bin/sh", "-c", healthcheck], env=env, capture_output=True, timeout=30)
    assert after.returncode != 0, "the healthcheck must fail when the daemon is gone"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
