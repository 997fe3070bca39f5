"""Real libvirt daemons for the KVM driver's contract tests.

The system daemon (`qemu:///system`) is started if it is not running. Live migration needs a
second, independent daemon on this same machine: it runs in a private mount namespace where
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt are folders
of its own, with its own host UUID (libvirt refuses to migrate a guest to "the same host"), and
is reached over its own unix socket. Storage is a directory both daemons see at the same path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SYSTEM_URI = "qemu:///system"
LIBVIRT_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}


class DaemonUnavailable(Exception):
    """The daemon could not be started here; the message says exactly why."""


def _virsh_ok(uri: str) -> bool:
    result = subprocess.run(
        ["virsh", "-c", uri, "version"], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0


def _wait_for(uri: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _virsh_ok(uri):
            return True
        time.sleep(0.2)
    return False


def kvm_usable() -> bool:
    """Give /dev/kvm to group kvm as Debian's udev rule does (containers have no udev).

    Without it QEMU (running as libvirt-qemu) cannot open /dev/kvm, and libvirtd, seeing the
    device but not being able to use it, re-probes QEMU's capabilities on every define: 40 s
    a call. Returns whether guests can use KVM; otherwise they run under TCG.
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return False
    if os.geteuid() == 0 and kvm.stat().st_mode & 0o060 != 0o060:
        shutil.chown(kvm, group="kvm")
        kvm.chmod(0o660)
    return True


def ensure_system_daemon() -> list[int]:
    """Start virtlogd and libvirtd as root unless libvirtd answers already; return pids started."""
    if shutil.which("libvirtd") is None or shutil.which("virsh") is None:
        raise DaemonUnavailable("libvirtd/virsh not installed (run .ci/install-system-packages)")
    kvm_usable()
    if _virsh_ok(SYSTEM_URI):
        return []
    if os.geteuid() != 0:
        raise DaemonUnavailable("libvirtd is not running and starting it needs root")
    started: list[int] = []
    for daemon, pidfile in (("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")):
        subprocess.run([daemon, "-d"], check=True, timeout=30)
        started.append(_read_pid(Path(pidfile), 10))
    if not _wait_for(SYSTEM_URI, 30):
        raise DaemonUnavailable("libvirtd was started but qemu:///system never answered")
    return started


def _read_pid(pidfile: Path, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return int(pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    raise DaemonUnavailable(f"{pidfile} never appeared")


def stop_pids(pids: list[int]) -> None:
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


@dataclass
class SecondDaemon:
    base: Path
    pids: list[int]

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.base / 'run' / 'libvirt-sock'}"

    def stop(self) -> None:
        # Guests it still runs would outlive it: destroy them first.
        listing = subprocess.run(
            ["virsh", "-c", self.uri, "list", "--name"], capture_output=True, text=True
        )
        for name in listing.stdout.split():
            subprocess.run(["virsh", "-c", self.uri, "destroy", name], capture_output=True)
        stop_pids(self.pids)
        shutil.rmtree(self.base, ignore_errors=True)


def start_second_daemon(base: Path) -> SecondDaemon:
    """Start libvirtd and virtlogd in a private mount namespace over folders under `base`."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise DaemonUnavailable("a second libvirtd needs root and unshare(1) for its namespace")
    for name in LIBVIRT_DIRS:
        (base / name).mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/libvirt", base / "etc", dirs_exist_ok=True, symlinks=True)
    # Only guests and pools of its own: no autostarted networks (their bridges would clash).
    for autostart in (base / "etc").glob("**/autostart"):
        shutil.rmtree(autostart, ignore_errors=True)
    for kept in ("qemu/networks", "storage"):
        for xml in (base / "etc" / kept).glob("*.xml"):
            xml.unlink()
    for xml in (base / "etc" / "qemu").glob("*.xml"):
        xml.unlink()
    conf = base / "etc" / "libvirtd.conf"
    conf.write_text(conf.read_text() + f'\nhost_uuid = "{uuid.uuid4()}"\n')
    qemu_lib = base / "lib" / "qemu"
    for sub in ("channel/target", "dump", "nvram", "ram", "save", "snapshot", "checkpoint"):
        (qemu_lib / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(qemu_lib, "libvirt-qemu", "kvm")
    mounts = " && ".join(
        f"mount --bind {base / name} {target}" for name, target in LIBVIRT_DIRS.items()
    )
    script = (
        f"set -e; {mounts}; "
        f"virtlogd -d -p {base / 'virtlogd.pid'}; "
        f"libvirtd -d -p {base / 'libvirtd.pid'}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise DaemonUnavailable(f"second libvirtd failed to start: {result.stderr.strip()}")
    pids = [_read_pid(base / "virtlogd.pid", 10), _read_pid(base / "libvirtd.pid", 10)]
    daemon = SecondDaemon(base, pids)
    if not _wait_for(daemon.uri, 30):
        daemon.stop()
        raise DaemonUnavailable("second libvirtd started but never answered on its socket")
    return daemon
