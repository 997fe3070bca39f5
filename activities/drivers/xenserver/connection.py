"""Reaching a XenServer pool master, running XAPI tasks, and finding VMs in the pool.

Every call goes to the pool master; hosts are pool members found by name or address. The pool
master URL and credentials come from the worker's configuration (`XenServerPool`, one per
cluster id); refs carry only names and addresses, and no URL with credentials is accepted.

Long operations run as XAPI tasks (`Async.*`) polled up to `task_timeout`; past it the outcome is
unknown and `DriverTimeoutError` says so. Every single XML-RPC exchange is bounded by
`call_timeout`. A halted VM has no `resident_on` in XAPI: it belongs to its `affinity` host.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import XenAPI

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    NicSpec,
    PowerState,
    ResourceUnavailableError,
    VirtualMachineInfo,
    VirtualMachineSpec,
)
from activities.drivers.xenserver.errors import translate_failure
from activities.drivers.xenserver.tags import PENDING_PREFIX, VM_ID_KEY

T = TypeVar("T")
Record = dict[str, Any]

NULL_REF = "OpaqueRef:NULL"
MIB = 1024 * 1024

#: A paused VM still sits in its host's memory: on. A suspended one is only an image on disk,
#: resident nowhere: off (as CloudStack's XenServer resource reports it); starting it resumes it.
_POWER_STATES = {
    "Running": PowerState.POWERED_ON,
    "Paused": PowerState.POWERED_ON,
    "Suspended": PowerState.POWERED_OFF,
    "Halted": PowerState.POWERED_OFF,
}


@dataclass(frozen=True)
class XenServerPool:
    """How the worker reaches one pool master. The password never leaves this object."""

    url: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("a XenServer pool URL is http(s)://<pool master>[:port]/")
        if parsed.username or parsed.password:
            raise ValueError("put XenServer credentials in username/password, not in the URL")


class _Transport(xmlrpc.client.Transport):
    """Bounds every HTTP exchange with XAPI; xmlrpc's transports have no timeout of their own."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _SafeTransport(xmlrpc.client.SafeTransport):
    """The same over TLS."""

    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _PoolSession:
    """One logged-in XAPI session. XenAPI's session object is not thread safe: one call at a time.

    The client logs in again by itself when the master answers SESSION_INVALID (after a master
    restart), with the credentials it keeps in memory.
    """

    def __init__(self, pool: XenServerPool, timeout: float) -> None:
        if urlparse(pool.url).scheme == "https":
            context = ssl.create_default_context()
            if not pool.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            transport: xmlrpc.client.Transport = _SafeTransport(timeout, context)
        else:
            transport = _Transport(timeout)
        self._session = XenAPI.Session(pool.url, transport=transport)
        self._lock = threading.Lock()
        with self._lock:
            self._session.xenapi.login_with_password(pool.username, pool.password, "1.0", "stratus")

    def call(self, method: str, *args: Any) -> Any:
        target = self._session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        with self._lock:
            return target(*args)

    def logout(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._session.xenapi.session.logout()


class XenServerConnection:
    """The driver's settings, its pool sessions, and the lookups every concern starts from."""

    def __init__(
        self,
        pools: Mapping[str, XenServerPool],
        *,
        base_template: Callable[[VirtualMachineSpec], str] | str = "Other install media",
        network_name: Callable[[NicSpec], str] | None = None,
        shutdown_timeout: float = 120.0,
        task_timeout: float = 600.0,
        call_timeout: float = 60.0,
        poll_interval: float = 0.1,
    ) -> None:
        """`pools` maps a cluster id to its pool master.

        `base_template` names the XAPI template a VM is cloned from (or derives it from the
        spec, e.g. from `os_type`); `network_name` the XAPI network a NIC plugs into (default:
        the network id). `shutdown_timeout` is how long a clean shutdown or reboot may take
        before the driver pulls the plug, as CloudStack does; `task_timeout` bounds every XAPI
        task and `call_timeout` every single XML-RPC exchange.
        """
        self._pools = pools
        self._base_template = base_template
        self._network_name = network_name or (lambda nic: nic.network_id)
        self._shutdown_timeout = shutdown_timeout
        self._task_timeout = task_timeout
        self._call_timeout = call_timeout
        self._poll_interval = poll_interval
        self._sessions: dict[str, _PoolSession] = {}
        self._lock = threading.Lock()
        self._stores_lock = threading.Lock()
        self._store_locks: dict[str, threading.Lock] = {}

    def _session(self, host: HostRef) -> _PoolSession:
        pool = self._pools.get(host.cluster_id)
        if pool is None:
            raise ResourceUnavailableError(f"no XenServer pool configured for {host.cluster_id}")
        with self._lock:
            session = self._sessions.get(host.cluster_id)
            if session is None:
                session = _PoolSession(pool, self._call_timeout)
                self._sessions[host.cluster_id] = session
            return session

    def _forget(self, host: HostRef) -> None:
        with self._lock:
            self._sessions.pop(host.cluster_id, None)

    def close(self) -> None:
        """Log out of every pool (worker shutdown, tests)."""
        with self._lock:
            for session in self._sessions.values():
                session.logout()
            self._sessions.clear()

    def _call(self, host: HostRef, action: str, work: Callable[[_PoolSession], T]) -> T:
        """Run one driver operation against the host's pool, translating XAPI's failures."""
        try:
            return work(self._session(host))
        except DriverError:
            raise
        except XenAPI.Failure as failure:
            raise translate_failure(failure.details, action) from failure
        except TimeoutError as error:
            self._forget(host)
            raise DriverTimeoutError(
                f"{action}: no answer from the pool master within {self._call_timeout:g} s; "
                "the outcome is unknown"
            ) from error
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as error:
            self._forget(host)
            raise ResourceUnavailableError(
                f"{action}: cannot reach the pool master of {host.cluster_id}: {error}"
            ) from error
        except xmlrpc.client.Fault as fault:
            raise DriverError(f"{action}: XAPI fault {fault.faultString}") from fault

    def _task(self, xapi: _PoolSession, action: str, method: str, *args: Any) -> Any:
        """Run `Async.<method>` and wait for it; its result, or its failure raised."""
        return self._await(xapi, action, xapi.call(f"Async.{method}", *args), self._task_timeout)

    def _await(self, xapi: _PoolSession, action: str, task: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = xapi.call("task.get_status", task)
            if status == "success":
                result = xapi.call("task.get_result", task)
                xapi.call("task.destroy", task)
                return _task_value(result)
            if status in ("failure", "cancelled"):
                details = xapi.call("task.get_error_info", task)
                xapi.call("task.destroy", task)
                raise XenAPI.Failure(details)
            if time.monotonic() > deadline:
                with contextlib.suppress(XenAPI.Failure):
                    xapi.call("task.cancel", task)
                raise DriverTimeoutError(
                    f"{action}: XAPI task {task} still {status} after {timeout:g} s; "
                    "the outcome is unknown"
                )
            time.sleep(self._poll_interval)

    def _host(self, xapi: _PoolSession, host: HostRef, *, live: bool = False) -> str:
        """The pool member for a host ref; with `live`, refuse one the pool sees as dead."""
        for ref, record in xapi.call("host.get_all_records").items():
            if host.name in (record["name_label"], record["hostname"]) or (
                host.address and record["address"] == host.address
            ):
                if live and not xapi.call("host_metrics.get_live", record["metrics"]):
                    raise ResourceUnavailableError(
                        f"host {host.name} is not live in its XenServer pool"
                    )
                return str(ref)
        raise ResourceUnavailableError(f"host {host.name} is not a member of its XenServer pool")

    @staticmethod
    def _is_guest(record: Record) -> bool:
        return not (
            record["is_a_template"] or record["is_a_snapshot"] or record["is_control_domain"]
        )

    def _lookup(self, xapi: _PoolSession, vm_id: str, *, pending: bool = False) -> str | None:
        """The VM with this Stratus id anywhere in the pool; with `pending`, a half-defined one."""
        for ref, record in xapi.call("VM.get_all_records").items():
            if record["is_a_snapshot"] or record["is_control_domain"]:
                continue
            tagged = record["other_config"].get(VM_ID_KEY) == vm_id
            if tagged and not record["is_a_template"]:
                return str(ref)
            if pending and (tagged or record["name_label"] == PENDING_PREFIX + vm_id):
                return str(ref)
        return None

    @staticmethod
    def _home(record: Record) -> str:
        """Where a VM is: the host it runs on, or for a halted VM the host it belongs to."""
        resident = str(record["resident_on"])
        return resident if resident != NULL_REF else str(record["affinity"])

    def _vm_on(self, xapi: _PoolSession, host: HostRef, vm_id: str) -> tuple[str, Record] | None:
        ref = self._lookup(xapi, vm_id)
        if ref is None:
            return None
        record = xapi.call("VM.get_record", ref)
        if self._home(record) != self._host(xapi, host):
            return None
        return ref, record

    def _vm(self, xapi: _PoolSession, host: HostRef, vm_id: str) -> tuple[str, Record]:
        found = self._vm_on(xapi, host, vm_id)
        if found is None:
            raise DriverError(f"VM {vm_id} is not defined on host {host.name}", retryable=False)
        return found

    @staticmethod
    def _info(record: Record, host: HostRef) -> VirtualMachineInfo:
        return VirtualMachineInfo(
            vm_id=record["other_config"].get(VM_ID_KEY) or record["uuid"],
            name=record["name_label"],
            power_state=_POWER_STATES.get(record["power_state"], PowerState.UNKNOWN),
            host_id=host.host_id,
        )

    def _refresh(self, xapi: _PoolSession, ref: str, host: HostRef) -> VirtualMachineInfo:
        return self._info(xapi.call("VM.get_record", ref), host)


def _task_value(result: str) -> Any:
    """Decode a task result: XAPI returns the XML-RPC `<value>` of it as a string."""
    if not result:
        return ""
    document = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(document)
    return value
