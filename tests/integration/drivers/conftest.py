"""Fixtures shared by the hypervisor driver contract tests: real daemons and test images.

Everything runs on loopback. Expensive daemons are session-scoped and stopped at the end only
if this session started them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.drivers.libvirt_daemons import (
    DaemonUnavailable,
    SecondDaemon,
    ensure_system_daemon,
    start_second_daemon,
    stop_pids,
)


@pytest.fixture(scope="session")
def shared_storage_dir() -> Iterator[Path]:
    """A folder QEMU (running as libvirt-qemu) can reach: pytest's tmp folders are root-only."""
    path = Path(tempfile.mkdtemp(prefix="stratus-drivers-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def libvirt_system_daemon() -> Iterator[str]:
    """qemu:///system, with libvirtd and virtlogd started as root if they were not running."""
    try:
        started = ensure_system_daemon()
    except DaemonUnavailable as error:
        pytest.skip(f"no real libvirtd: {error}")
    yield "qemu:///system"
    stop_pids(started)


@pytest.fixture(scope="session")
def libvirt_second_daemon(libvirt_system_daemon: str) -> Iterator[SecondDaemon | str]:
    """A second libvirtd (the migration target), or the reason it could not be started."""
    base = Path(tempfile.mkdtemp(prefix="stratus-libvirtd2-", dir="/var/tmp"))
    try:
        daemon = start_second_daemon(base)
    except DaemonUnavailable as error:
        shutil.rmtree(base, ignore_errors=True)
        yield str(error)
        return
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def qcow2_template(shared_storage_dir: Path) -> Path:
    """A tiny empty qcow2 image standing in for a template (no OS: the VM just idles)."""
    path = shared_storage_dir / "template-tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "24M"], check=True, timeout=30
    )
    os.chmod(path, 0o644)
    return path
