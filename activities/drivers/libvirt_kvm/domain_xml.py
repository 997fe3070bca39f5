"""The libvirt XML a Stratus VM's disks are written in and read back from.

Data disks hang off a virtio-scsi controller because SCSI hot-unplug completes without the
guest's help, which a virtio-blk unplug does not. A disk's device id is its place on that bus:
0 is the root disk (`sda`), data disks count from 1.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from activities.drivers.hypervisor import VolumeInfo


class Disk:
    """A disk as read back from domain XML."""

    def __init__(self, element: ElementTree.Element) -> None:
        source = element.find("source")
        target = element.find("target")
        self.path = "" if source is None else source.get("file", "")
        self.target = "" if target is None else target.get("dev", "")
        self.volume_id = Path(self.path).name.removesuffix(".qcow2")
        self.device_id = device_id_of(self.target)
        self.xml = ElementTree.tostring(element, encoding="unicode")


def disks(domain_xml: str) -> list[Disk]:
    root = ElementTree.fromstring(domain_xml)
    return [Disk(e) for e in root.findall("./devices/disk[@device='disk']")]


def device_name(device_id: int) -> str:
    """sda, sdb, ... sdz, sdaa: device 0 is the root disk."""
    letters = ""
    index = device_id
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index = index // 26 - 1
        if index < 0:
            return f"sd{letters}"


def device_id_of(target: str) -> int:
    index = 0
    for letter in target.removeprefix("sd").removeprefix("vd"):
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return index - 1


def disk_xml(volume: VolumeInfo, device_id: int) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{escape(volume.path)}'/>"
        f"<target dev='{device_name(device_id)}' bus='scsi'/></disk>"
    )


def escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )
