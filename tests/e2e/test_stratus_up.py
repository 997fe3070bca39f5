"""`stratus up`, the README's first command, as a process: it serves the API on its embedded
PostgreSQL and Temporal, and SIGTERM (what systemd and `docker stop` send) stops it the way
Ctrl-C does, leaving no embedded server running behind it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_mentioning(text: str) -> dict[int, str]:
    """Live processes (pid: command line) that name `text` (the embedded servers name the
    state folder: `postgres -D <state>/postgres`, `temporal ... --db-filename <state>/...`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found[int(entry.name)] = command.strip()
    return found


def test_stratus_up_serves_the_api_and_sigterm_stops_everything_it_started(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    env.update(
        STRATUS_STATE_DIR=str(state),
        STRATUS_API_PORT=str(api_port),
        STRATUS_TEMPORAL_PORT=str(free_port()),
        STRATUS_TEMPORAL_UI_PORT=str(free_port()),
    )
    stratus = Path(sys.executable).parent / "stratus"
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen([str(stratus), "up"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        listed = None
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "up.log").read_text()
            key_file = state / "admin-api-key"
            if key_file.exists():
                try:
                    listed = httpx.get(
                        f"http://127.0.0.1:{api_port}/v1/virtual-machines",
                        headers={"X-API-Key": key_file.read_text().strip()},
                        timeout=5,
                    )
                    break
                except httpx.TransportError:
                    pass
            time.sleep(0.5)
        assert listed is not None, "the API never answered"
        assert listed.status_code == 200 and listed.json()["count"] == 0
        assert processes_mentioning(str(state)) != {}  # the embedded servers run

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, (tmp_path / "up.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        left = processes_mentioning(str(state))
        for pid in left:  # a failed run must not leave servers holding ports for later tests
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert (
        "stopping worker, projector, Temporal and PostgreSQL" in (tmp_path / "up.log").read_text()
    )
    assert left == {}
