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


VCSIM_DIR = Path(__file__).resolve().parents[2] / "vcsim"
GOCODE = Path("/usr/share/gocode")


def build_vcsim() -> Path:
    """Build tests/vcsim/main.go against Debian's govmomi source, offline (GOPATH mode)."""
    binary = VCSIM_DIR / "bin" / "vcsim"
    source = VCSIM_DIR / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    if shutil.which("go") is None or not (GOCODE / "src/github.com/vmware/govmomi").is_dir():
        pytest.skip(
            "go or golang-github-vmware-govmomi-dev missing: run .ci/install-system-packages"
        )
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{VCSIM_DIR / 'bin' / 'gopath'}:{GOCODE}",
        "GOCACHE": str(VCSIM_DIR / "bin" / "gocache"),
        "GOFLAGS": "",
        "GOPROXY": "off",
    }
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=VCSIM_DIR, env=env, check=True, timeout=540
    )
    return binary


@pytest.fixture(scope="session")
def vcsim_url() -> Iterator[str]:
    """govmomi's vCenter simulator on 127.0.0.1 over plain http; yields its SDK URL."""
    process = subprocess.Popen(
        [str(build_vcsim())], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url:
        process.kill()
        pytest.fail("vcsim printed no URL")
    yield url
    process.terminate()
    process.wait(timeout=10)
