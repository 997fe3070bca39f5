"""An IPMI 2.0 client over pyghmi, shared by the bare-metal driver (a host that *is* a machine)
and out-of-band management (the BMC of any host): one exchange at a time, failures translated
into driver errors, sessions logged out on close.

**Cipher suite.** pyghmi's client opens an RMCP+ session proposing SHA-256 (cipher suite 17)
and falls back to SHA-1 (suite 3) only when the BMC *refuses* the proposal. Some BMCs, pyghmi's
own `Bmc` server among them, accept it but answer with the suite-3 algorithms; the client keeps
computing SHA-256 and the RAKP handshake fails. With `cipher_suite=3` the client proposes SHA-1
from the start: `_CipherSuite3Session` overrides `Session._open_rmcpplus_request` to set
`attemptedhash = 1` just before every open-session request (pyghmi resets it to 256 on each
(re)login in `_initsession`, so setting it once would not survive a re-login). pyghmi's
`Command` always builds a plain `Session`, but shares a live session that has the same BMC,
port and credentials; so the client logs in with its own session first and `Command` adopts it,
which it checks (`command.ipmi_session is session`) rather than assumes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyghmi import exceptions as ipmi_exceptions
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmi_session

from activities.drivers.hypervisor import DriverError, ResourceUnavailableError

T = TypeVar("T")
IPMI_PORT = 623
#: IPMI completion codes after which another try may succeed (node busy, timeout, out of space
#: in the BMC's buffers, command in progress).
_BUSY_CODES = {0xC0, 0xC3, 0xC4, 0xCE}


class _CipherSuite3Session(ipmi_session.Session):  # type: ignore[misc]
    """A pyghmi session that proposes cipher suite 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128)."""

    def _open_rmcpplus_request(self) -> None:
        self.attemptedhash = 1
        super()._open_rmcpplus_request()


@dataclass(frozen=True)
class BmcLogin:
    """A BMC's login: from the worker's configuration, never from an event or a request."""

    username: str
    password: str = field(repr=False)


def bmc_address(address: str, port: int | None = None) -> tuple[str, int]:
    """(host, port) of `host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    address = address.strip()
    if address.startswith("["):  # [v6]:port
        bracketed, _, given = address[1:].partition("]")
        return bracketed, int(given.lstrip(":") or port or IPMI_PORT)
    name, colon, given = address.rpartition(":")
    if colon and name and ":" not in name:
        return name, int(given)
    return address, port or IPMI_PORT


class IpmiClient:
    """IPMI exchanges with BMCs. pyghmi's sessions and event loop are process-wide, so one
    exchange runs at a time per process."""

    _lock = threading.Lock()

    def __init__(self, *, cipher_suite: int = 3) -> None:
        """`cipher_suite` is 3 (propose SHA-1 only) or 17 (pyghmi's default: SHA-256, then
        SHA-1 if the BMC refuses)."""
        if cipher_suite not in (3, 17):
            raise ValueError("cipher_suite is 3 or 17")
        self._cipher_suite = cipher_suite
        self._sessions: dict[tuple[str, int, str], Any] = {}

    def _command(self, bmc: str, port: int, login: BmcLogin, name: str) -> Any:
        user, password = login.username.encode(), login.password.encode()
        if self._cipher_suite == 17:
            return ipmi_command.Command(bmc=bmc, userid=user, password=password, port=port)
        session = _CipherSuite3Session(bmc=bmc, userid=user, password=password, port=port)
        command = ipmi_command.Command(bmc=bmc, userid=user, password=password, port=port)
        if command.ipmi_session is not session:
            raise DriverError(f"pyghmi did not reuse the cipher suite 3 session to {name}")
        self._sessions[(bmc, port, login.username)] = session
        return command

    def exchange(
        self,
        name: str,
        address: str,
        login: BmcLogin,
        action: str,
        call: Callable[[Any], T],
        *,
        port: int | None = None,
    ) -> T:
        """One exchange with the BMC at `address` (of the host called `name`), its failures
        translated: unreachable is 534 and retryable, a refused login or command is final."""
        try:
            bmc, bmc_port = bmc_address(address, port)
        except ValueError:
            raise DriverError(f"{action}: {address!r} is not a BMC address") from None
        with self._lock:
            try:
                return call(self._command(bmc, bmc_port, login, name))
            except DriverError:
                raise
            except ipmi_exceptions.IpmiException as error:
                raise _translate(error, action, name) from error
            except OSError as error:
                raise ResourceUnavailableError(
                    f"{action}: cannot reach the BMC of {name}: {error}"
                ) from error
            except Exception as error:
                # pyghmi's shared event loop can raise another session's protocol trouble
                # (e.g. a struct.error from a BMC that mis-negotiated the cipher suite).
                raise DriverError(
                    f"{action}: IPMI failure with {name}: {type(error).__name__}: {error}",
                    retryable=True,
                ) from error

    def close(self) -> None:
        """Log out of the BMCs (worker shutdown, tests); pyghmi would keep the sessions alive."""
        with self._lock:
            sessions, self._sessions = self._sessions, {}
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    session.logout()


def _translate(error: Exception, action: str, name: str) -> DriverError:
    """Map a pyghmi failure: no session (unreachable BMC) is 534, a refused login is final."""
    reason = str(error) if str(error) not in ("", "None") else "no answer (timed out)"
    message = f"{action}: BMC of {name}: {reason}"
    text = reason.lower()
    if any(word in text for word in ("password", "unauthorized", "privilege", "rakp")):
        return DriverError(message, retryable=False)
    code = getattr(error, "ipmicode", 0)
    if code in _BUSY_CODES:
        return ResourceUnavailableError(message)
    if code:
        return DriverError(message, retryable=False)
    return ResourceUnavailableError(message)
