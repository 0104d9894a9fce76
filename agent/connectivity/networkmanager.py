"""Optional NetworkManager link watcher over the system D-Bus (jeepney, pure Python, imported only here).

When jeepney or the system bus or NetworkManager is missing, this logs once and returns: the health probes
alone still decide. Nothing else in the agent depends on D-Bus.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.core.logging import get_logger

log = get_logger("connectivity")

# NMState values (NetworkManager's D-Bus API): what each means for reaching a cloud service.
NM_STATE_ASLEEP = 10
NM_STATE_DISCONNECTED = 20
NM_STATE_DISCONNECTING = 30
NM_STATE_CONNECTING = 40
NM_STATE_CONNECTED_LOCAL = 50
NM_STATE_CONNECTED_SITE = 60
NM_STATE_CONNECTED_GLOBAL = 70


def link_up_from_state(state: int) -> bool | None:
    """True: worth probing now; False: certainly unreachable; None: in between (let the probes decide)."""
    if state in (NM_STATE_ASLEEP, NM_STATE_DISCONNECTED, NM_STATE_DISCONNECTING):
        return False
    if state in (NM_STATE_CONNECTED_SITE, NM_STATE_CONNECTED_GLOBAL):
        return True
    return None


async def watch_networkmanager(on_link: Callable[[bool], None]) -> None:
    """Call `on_link(up)` with NetworkManager's state now and on every StateChanged signal, until cancelled."""
    try:
        from jeepney import DBusAddress, MatchRule, Properties
        from jeepney.bus_messages import message_bus
        from jeepney.io.asyncio import open_dbus_router
    except ImportError:
        log.info("networkmanager-unavailable", reason="jeepney is not installed; health probes decide alone")
        return
    path, name = "/org/freedesktop/NetworkManager", "org.freedesktop.NetworkManager"
    try:
        async with open_dbus_router(bus="SYSTEM") as router:
            nm = DBusAddress(path, bus_name=name, interface=name)
            reply = await router.send_and_get_reply(Properties(nm).get("State"))
            _deliver(on_link, int(reply.body[0][1]))
            rule = MatchRule(type="signal", sender=name, interface=name, member="StateChanged", path=path)
            await router.send_and_get_reply(message_bus.AddMatch(rule))
            with router.filter(rule) as signals:
                while True:
                    message = await signals.get()
                    _deliver(on_link, int(message.body[0]))
    except (OSError, ConnectionError) as err:
        log.info("networkmanager-unavailable", reason=f"{type(err).__name__}: {err}")
    except Exception as err:  # e.g. NetworkManager not on the bus: a D-Bus error reply
        log.info("networkmanager-unavailable", reason=f"{type(err).__name__}: {err}")


def _deliver(on_link: Callable[[bool], None], state: int) -> None:
    up = link_up_from_state(state)
    log.info("networkmanager-state", state=state, link_up=up)
    if up is not None:
        on_link(up)
