"""What the car says when a queued action finishes: placed, refused (with the service's reason), or expired;
and how old a remembered answer is ("as of 12 minutes ago").

Short sentences for a driver; `entry.summary` is the noun phrase the plugin wrote when it queued the action
("a large pepperoni pizza from Luigi's Pizzeria, 89 yuan", "your running shoes").
"""

from __future__ import annotations

from typing import Any

from agent.outbox.entries import DELIVERED, EXPIRED, FAILED, Entry


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _when(body: dict[str, Any]) -> str:
    return " ".join(x for x in (body.get("day"), body.get("time_window")) if x)


def outcome_text(
    entry: Entry, outcome: str, detail: str | None = None, *, expiry_minutes: float | None = None
) -> str:
    """The announcement for `entry` reaching `outcome` (delivered, failed, expired)."""
    zh = entry.language == "zh"
    s, body, result = entry.summary, entry.body, entry.result or {}
    reason = (detail or "").rstrip(".")
    minutes = round(
        expiry_minutes if expiry_minutes is not None else (entry.expires_at - entry.created_at) / 60
    )
    if entry.action == "order_meal":
        if outcome == DELIVERED:
            eta = (result.get("order") or {}).get("eta_minutes")
            if zh:
                return f"已为您下单：{s}。" + (f"大约{eta}分钟送到。" if eta is not None else "")
            return f"Your order is placed: {s}." + (
                f" It should arrive in about {eta} minutes." if eta else ""
            )
        if outcome == FAILED:
            return f"没能下单{s}：{reason}。" if zh else f"I couldn't place your order of {s}: {reason}."
        if outcome == EXPIRED:
            return (
                f"{s}没有下单：离线超过{minutes}分钟。还想要的话请再说一次。"
                if zh
                else f"I didn't place your order of {s}: the car was offline for more than {minutes} minutes. "
                "Ask me again if you still want it."
            )
    if entry.action == "cancel_order":
        if outcome == DELIVERED:
            return f"{s}已取消。" if zh else f"{_cap(s)} is cancelled."
        if outcome == FAILED:
            return f"没能取消{s}：{reason}。" if zh else f"I couldn't cancel {s}: {reason}."
        if outcome == EXPIRED:
            return f"没能及时取消{s}。" if zh else f"I couldn't cancel {s} in time: the car was offline."
    change = {
        "reschedule_delivery": (f"改到{_when(body)}送", f"will now come {_when(body)}"),
        "redirect_delivery": (
            f"改送到{body.get('destination', '')}",
            f"will go to {body.get('destination', '')}",
        ),
        "hold_at_locker": (
            "会放到快递柜",
            f"will be left at {body.get('locker') or 'the nearest parcel locker'}",
        ),
    }.get(entry.action)
    if change is not None:
        if outcome == DELIVERED:
            return f"{s}{change[0]}。" if zh else f"Done: {s} {change[1]}."
        if outcome == FAILED:
            return f"{s}没能{change[0]}：{reason}。" if zh else f"I couldn't change {s}: {reason}."
        if outcome == EXPIRED:
            return (
                f"{s}没能{change[0]}：离线太久。"
                if zh
                else f"I didn't change {s}: the car was offline for more than {minutes} minutes."
            )
    if zh:
        return {DELIVERED: f"{s}：已完成。", FAILED: f"{s}：失败，{reason}。"}.get(outcome, f"{s}：已过期。")
    return {DELIVERED: f"Done: {s}.", FAILED: f"{_cap(s)} failed: {reason}."}.get(
        outcome, f"{_cap(s)} expired before the car was back online."
    )


def announcement_for(entry: Entry, *, expiry_minutes: float | None = None) -> tuple[str, str]:
    """(text, priority) of the notice a finished entry owes the driver when no tool is there to say it."""
    reason = (entry.last_error or "").split(": ", 1)[-1]
    text = outcome_text(entry, entry.state, reason, expiry_minutes=expiry_minutes)
    return text, "high" if entry.state == FAILED else "normal"


# Why an action is not in the outbox at all, in the driver's words: what comes after "I couldn't place your
# order of ...:". Only ever said when the store is known not to hold it.
NOT_SAVED = {
    "outbox-busy": (
        "the car couldn't save it just now, so nothing was ordered. Please ask again",
        "车上暂时无法保存，没有下单，请再说一次",
    ),
    "outbox-disk-full": (
        "the car's storage is full, so nothing was ordered",
        "车上存储已满，没有下单",
    ),
}
NOT_SAVED_OTHER = ("the car couldn't save it, so nothing was ordered", "车上无法保存，没有下单")


def not_saved_reason(code: str, language: str) -> str:
    en, zh = NOT_SAVED.get(code, NOT_SAVED_OTHER)
    return zh if language == "zh" else en


def age_phrase(seconds: float, language: str = "en") -> str:
    """ "as of 12 minutes ago" / "12分钟前的信息": how old a cached answer is, in words the driver hears."""
    minutes = int(max(0.0, seconds) // 60)
    if language == "zh":
        if minutes < 1:
            return "刚才"
        if minutes < 60:
            return f"{minutes}分钟前"
        return f"{minutes // 60}小时前"
    if minutes < 1:
        return "as of a moment ago"
    if minutes < 60:
        return f"as of {minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = minutes // 60
    return f"as of {hours} hour{'s' if hours != 1 else ''} ago"
