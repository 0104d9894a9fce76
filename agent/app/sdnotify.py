"""The sd_notify protocol (READY=1, STATUS=, WATCHDOG=1, STOPPING=1, ...) without libsystemd.

Messages are datagrams sent to the AF_UNIX socket named by $NOTIFY_SOCKET: a path, or `@name` for the
abstract namespace. With no $NOTIFY_SOCKET (a terminal, a test) every call is a silent no-op, so the
daemon calls these unconditionally. A failed send is logged once and never raised: telling systemd how
we are must not be the reason we die.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from agent.core.logging import get_logger

log = get_logger("sdnotify")

# systemd truncates STATUS= in `systemctl status`; keeping it short also keeps one datagram small.
MAX_STATUS_CHARS = 200


def _address(value: str) -> str | bytes:
    """`@name` is the abstract namespace: a leading NUL byte instead of a filesystem path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """One connection to the service manager's notification socket.

    `socket_address` None reads $NOTIFY_SOCKET from `environ` (default os.environ); an empty value
    disables the notifier. Thread-safe enough for our use: each call is one sendto() of one datagram.
    """

    def __init__(
        self, socket_address: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket_address = socket_address if socket_address is not None else env.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self._warned = False
        # What the daemon last said it was doing, so the watchdog can restore it after an "unhealthy" status.
        self.last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.socket_address)

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when it was sent (False when disabled or failed)."""
        if not self.enabled:
            return False
        payload = "\n".join(assignments).encode()
        address = self.socket_address
        if not address.startswith(("/", "@")):
            # systemd >= 254 also allows vsock:CID:PORT (VMs); a head unit never needs it.
            self._warn_once(f"unsupported NOTIFY_SOCKET {address!r}")
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Bounded: pid 1 reads its notify socket promptly, but we must never hang the loop on it.
                sock.settimeout(1.0)
                self._sock = sock
            self._sock.sendto(payload, _address(address))
        except OSError as err:
            self._warn_once(f"cannot send to NOTIFY_SOCKET {address!r}: {err.strerror or err}")
            self.close()
            return False
        return True

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("sd-notify-failed", message=message)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # The messages the daemon sends (man sd_notify).

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: models loaded, prompt cache warm, listening. Only once."""
        lines = ["READY=1"]
        if status:
            self.last_status = status
            lines.append(_status_line(status))
        return self.notify(*lines)

    def status(self, text: str, *, remember: bool = True) -> bool:
        """A one-line human status shown by `systemctl status` ("listening", "offline: 2 orders queued").

        `remember=False` is for transient notes (the watchdog's "unhealthy: ...") that must not replace
        what the daemon is doing in `last_status`.
        """
        if remember:
            self.last_status = text
        return self.notify(_status_line(text))

    def watchdog(self) -> bool:
        """Keep-alive: send only while the pipeline is healthy (see agent.app.health.Watchdog)."""
        return self.notify("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """Ask systemd to act now as if the watchdog had expired (restart) rather than waiting for it."""
        return self.notify("WATCHDOG=trigger")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(_status_line(status))
        return self.notify(*lines)

    def reloading(self) -> bool:
        """Reload started (config re-read); follow with ready() when done. MONOTONIC_USEC is required by
        Type=notify-reload (systemd >= 253) and harmless for older managers."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Start-up or shutdown needs `seconds` more than the unit's timeout (cold model load, big flush)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def errno(self, code: int) -> bool:
        return self.notify(f"ERRNO={code}")


def _status_line(text: str) -> str:
    # A newline would start a new assignment inside the datagram.
    one_line = " ".join(text.split())
    return "STATUS=" + one_line[:MAX_STATUS_CHARS]


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, or None when no watchdog applies to this process.

    Mirrors sd_watchdog_enabled(): $WATCHDOG_USEC must be a positive integer, and when $WATCHDOG_PID is set
    it must name this process (a child must not inherit its parent's watchdog duty).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


# A process-wide notifier for the daemon's convenience: agent.app.sdnotify.ready(), .status("listening"), ...
_default: Notifier | None = None


def default() -> Notifier:
    global _default
    if _default is None:
        _default = Notifier()
    return _default


def ready(status: str | None = None) -> bool:
    return default().ready(status)


def status(text: str) -> bool:
    return default().status(text)


def watchdog() -> bool:
    return default().watchdog()


def stopping(status: str | None = None) -> bool:
    return default().stopping(status)


def reloading() -> bool:
    return default().reloading()


def extend_timeout(seconds: float) -> bool:
    return default().extend_timeout(seconds)
