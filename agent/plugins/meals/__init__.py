"""Meal ordering from the driver's seat: search, order (one or several lines, priced and confirmed once), repeat
the last order, status and cancel.

Talks to the meals service (docs/openapi.yaml). The catalogue (restaurants, menus, prices) comes from the service
and is kept on the device with its age. Orders and cancels go through the durable outbox, so an order given in a
tunnel is placed when the car is back online, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from agent.core.errors import ServiceError
from agent.core.logging import get_logger
from agent.core.words import numbers_in
from agent.outbox.entries import CANCELLED, DELIVERED, EXPIRED, FAILED, Entry
from agent.outbox.messages import outcome_text
from agent.plugins.base import Plugin, Prepared, Question, Tool, ToolContext, ToolResult
from agent.plugins.meals.catalogue import Catalogue, norm
from agent.plugins.meals.orders import describe, prepare_order
from agent.plugins.meals.tools import meal_tools
from agent.plugins.vehicle.state import named_in
from agent.services.access import Queued, ServiceAccess

log = get_logger("meals")

# How long a catalogue is used before asking the service again (it is kept, with its age, when offline).
CATALOGUE_REFRESH_SECONDS = 600.0
CATALOGUE_RETRY_SECONDS = 5.0  # while the car has no fresh catalogue (first start, a tunnel)


def _zh(ctx: ToolContext) -> bool:
    return ctx.language == "zh"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _order_id(entry: Entry | None) -> str | None:
    return ((entry.result or {}).get("order") or {}).get("id") if entry else None


class MealsPlugin(Plugin):
    name = "meals"
    requires_network = True

    def __init__(self, config: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.services = services if services is not None else {}
        self.access = ServiceAccess(config, self.services)
        self._catalogue: Catalogue | None = None
        self._catalogue_age_at: float = 0.0  # monotonic time the held catalogue was fetched (or read)
        self.catalogue_source = "none"
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Keep the catalogue fresh in the background: at once, then every few minutes (and soon after a
        tunnel), so the menu is on the car before the driver asks and recognition knows today's dishes."""
        self.cached_catalogue()
        self._refresher = asyncio.create_task(self._keep_catalogue_fresh(), name="meals-catalogue")

    async def _keep_catalogue_fresh(self) -> None:
        while True:
            try:
                await self.catalogue()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the next round tries again; ordering still works from the kept one
                log.warning("catalogue-refresh-failed", error=f"{type(err).__name__}: {err}")
            fresh = self.catalogue_source == "service"
            await asyncio.sleep(CATALOGUE_REFRESH_SECONDS / 4 if fresh else CATALOGUE_RETRY_SECONDS)

    async def stop(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refresher
        await self.access.aclose()

    # ------------------------------------------------------------ the catalogue

    async def catalogue(self) -> Catalogue | None:
        """The service's catalogue: fresh when it is due and the service answers, else the one kept on the car."""
        due = time.monotonic() - self._catalogue_age_at > CATALOGUE_REFRESH_SECONDS
        if self._catalogue is not None and not due:
            return self._catalogue
        try:
            read = await self.access.read("meals", "catalogue", lambda: self.access.client("meals").catalogue())
        except ServiceError as err:
            log.warning("catalogue-unavailable", error=err.code)
            read = None
        if read is not None:
            try:
                self._catalogue = Catalogue.from_json(read.data)
            except (KeyError, TypeError, ValueError) as err:
                log.warning("catalogue-unreadable", error=f"{type(err).__name__}: {err}")
            else:
                self.catalogue_source = read.source
                self._catalogue_age_at = time.monotonic() - read.age_seconds
        return self._catalogue

    def cached_catalogue(self) -> Catalogue | None:
        """The catalogue kept on the device, without asking the service (for recognition bias at start-up)."""
        if self._catalogue is None:
            try:
                kept = self.access.store.last_status("meals", "catalogue")
            except Exception as err:  # the store is the outbox's: trouble there must not stop recognition
                log.warning("catalogue-cache-unreadable", error=str(err))
                kept = None
            if kept is not None:
                self._catalogue = Catalogue.from_json(kept[0])
                self._catalogue_age_at = time.monotonic() - max(0.0, self.access.store.now() - kept[1])
                self.catalogue_source = "cache"
        return self._catalogue

    def vocabulary(self) -> list[str]:
        catalogue = self.cached_catalogue()
        return catalogue.vocabulary() if catalogue else []

    def state(self) -> dict[str, Any]:
        latest = self.access.store.latest(service="meals", action="order_meal")
        return {"last_order": None if latest is None else {"summary": latest.summary, "state": latest.state}}

    # ------------------------------------------------------------ tools

    def tools(self) -> list[Tool]:
        return meal_tools(search=self._search, order=self._order, status=self._status, cancel=self._cancel)

    # ------------------------------------------------------------ before a call is confirmed

    async def prepare(self, ctx: ToolContext, tool: str, arguments: dict[str, Any]) -> Prepared:
        if tool not in ("order_meal", "repeat_last_order"):
            return Prepared(dict(arguments))
        if tool == "repeat_last_order":
            arguments = await self._last_order_arguments()
            if arguments is None:
                return Prepared({}, problem="您还没有点过餐。" if _zh(ctx) else "I don't have an earlier order to repeat.")
        catalogue = await self.catalogue()
        if catalogue is None:
            return Prepared(dict(arguments), problem=(
                "我还没有拿到菜单，需要先联网一次。" if _zh(ctx)
                else "I don't have the menus yet: the car needs to be online once to get them."))
        # The arguments are checked against what the driver said; a call with no words (the control socket's
        # structured request, a repeat) is taken as it is.
        utterance = (ctx.utterance or None) if tool == "order_meal" else None
        outcome = prepare_order(catalogue, arguments, utterance, ctx.language)
        extra = {k: v for k, v in arguments.items() if k == "delivery_address"}
        args = outcome.arguments(extra)
        if outcome.question or outcome.problem:
            return Prepared(args, question=outcome.question, problem=outcome.problem, applies=outcome.applies)
        quote = outcome.quote
        limit = self.config.services.spend_limit
        if quote.total > limit:
            return Prepared(args, problem=(
                f"一共{quote.total:g}元，超过了{limit:g}元的消费上限。" if _zh(ctx)
                else f"That is {quote.total:g} yuan, over your {limit:g} yuan spend limit."))
        return Prepared(args, data={"quote": quote.as_dict(), "summary": describe(quote, ctx.language)})

    def fill(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], question: Question,
             answer: str) -> dict[str, Any] | None:
        catalogue = self._catalogue
        if tool != "order_meal" or catalogue is None:
            return None
        if question.slot == "size":
            size = catalogue.size_word(answer)
            if size is None:
                return None
            # The size is for the line that lacks one: the first line, or the first of more_items.
            args = {**arguments, "more_items": [dict(x) for x in arguments.get("more_items") or []]}
            for line in [args, *args["more_items"]]:
                item = next(iter(catalogue.best(line.get("item", ""))), None)
                if item is not None and (line.get("size") not in item.prices) and len(item.prices) > 1:
                    line["size"] = size
                    return args
            return None
        if question.slot == "choice":
            wanted = norm(answer)
            pick = next((o for o in question.options if norm(o) in wanted or wanted in norm(o)), None)
            if pick is None:
                best = catalogue.best(answer)
                pick = best[0].name if len(best) == 1 and best[0].name in question.options else None
            if pick is None:
                return None
            size = catalogue.size_word(answer)
            return {**arguments, "item": pick, **({"size": size} if size else {})}
        if question.slot == "item":
            mentions = catalogue.mentions(answer)
            if not mentions:
                return None
            first, *more = mentions
            args = {**arguments, "item": first.item.name}
            if first.quantity:
                args["quantity"] = first.quantity
            if first.size:
                args["size"] = first.size
            if more:
                args["more_items"] = [{"item": m.item.name, **({"quantity": m.quantity} if m.quantity else {}),
                                       **({"size": m.size} if m.size else {})} for m in more]
            return args
        return None

    def amend(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], words: str) -> dict[str, Any] | None:
        """ "Yes but make it two", "a large one", "and a coke", "deliver it to the office"."""
        if tool not in ("order_meal", "repeat_last_order") or self._catalogue is None:
            return None
        catalogue = self._catalogue
        args = {**arguments, "more_items": [dict(x) for x in arguments.get("more_items") or []]}
        if re.search(r"deliver|bring it|send it|送到|送去", words, re.IGNORECASE):
            place = named_in(words, [(p.name, [p.name, *p.aliases], p) for p in self.config.vehicle.places])
            if place is not None:
                return {**arguments, "delivery_address": place.name}
        mentions = catalogue.mentions(words)
        if mentions and re.search(r"\b(add|also|and|plus|another|with)\b|加|再来|还要|再要", words, re.IGNORECASE):
            args["more_items"] += [{"item": m.item.name, **({"quantity": m.quantity} if m.quantity else {}),
                                    **({"size": m.size} if m.size else {})} for m in mentions]
        elif mentions:
            args["item"] = mentions[0].item.name  # "make it a mocha instead"
        size = catalogue.size_word(words)
        if size:
            args["size"] = size
        counts = [int(n) for n in numbers_in(words) if n.is_integer() and 1 <= n <= 20]
        if counts and not mentions:
            args["quantity"] = counts[0]
        if not args["more_items"]:
            args.pop("more_items")
        return args if args != arguments else None

    async def _last_order_arguments(self) -> dict[str, Any] | None:
        entries = await asyncio.to_thread(self.access.store.list, service="meals", action="order_meal", limit=20)
        for entry in entries:
            if entry.state in (FAILED, EXPIRED, CANCELLED):
                continue
            lines = entry.body.get("items") or []
            if not lines:
                continue
            first, *more = lines
            args: dict[str, Any] = {"item": first["name"], "quantity": first.get("quantity", 1),
                                    "size": first.get("size")}
            if entry.body.get("restaurant_id"):
                args["restaurant"] = entry.body["restaurant_id"]
            if more:
                args["more_items"] = [{"item": x["name"], "quantity": x.get("quantity", 1), "size": x.get("size")}
                                      for x in more]
            return {k: v for k, v in args.items() if v is not None}
        return None

    async def confirmation_prompt(self, ctx: ToolContext, name: str, args: dict[str, Any],
                                  prepared: Prepared | None = None) -> str | None:
        """The question the driver answers before a purchase or cancel enters the outbox."""
        if name in ("order_meal", "repeat_last_order"):
            summary = (prepared.data.get("summary") if prepared else None) or ""
            if not summary:
                return None
            stale = self.catalogue_source == "cache" and time.monotonic() - self._catalogue_age_at > 3600
            if _zh(ctx):
                return f"{summary}{'（价格是之前保存的）' if stale else ''}。要下单吗？"
            return f"{_cap(summary)}{' (prices saved earlier)' if stale else ''}. Shall I order it?"
        if name == "cancel_order":
            latest = await asyncio.to_thread(self.access.store.latest, service="meals", action="order_meal")
            if latest is not None and latest.state not in (FAILED, EXPIRED, CANCELLED) and not args.get("order_id"):
                return f"要取消{latest.summary}吗？" if _zh(ctx) else f"Cancel your order of {latest.summary}?"
            return "要取消您的订单吗？" if _zh(ctx) else "Cancel your food order?"
        return None

    # ------------------------------------------------------------ search (read-only)

    async def _search(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        query = args["query"].strip()
        try:
            read = await self.access.read(
                "meals", f"search:{query.casefold()}", lambda: self.access.client("meals").search(query)
            )
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return await self._search_saved_catalogue(ctx, query)
        hits = read.data
        data = {"restaurants": hits, "source": read.source, "age_seconds": round(read.age_seconds)}
        if not hits:
            return ToolResult(ok=True, data=data,
                              say="附近没有找到。" if _zh(ctx) else f"I found nothing for {query} nearby.")
        top = next((h for h in hits if h.get("open", True)), hits[0])
        closed = "" if top.get("open", True) else (" (closed now)" if not _zh(ctx) else "（现在没营业）")
        if _zh(ctx):
            say = f"最近的是{top['name_zh']}，{top['distance_km']}公里{closed}。"
            if read.source == "cache":
                say = f"{read.as_of('zh')}的信息：{say}"
        else:
            say = f"{top['name']} is {top['distance_km']} kilometres away{closed}."
            if read.source == "cache":
                say = f"{_cap(read.as_of('en'))}: {say}"
        return ToolResult(ok=True, data=data, say=say)

    async def _search_saved_catalogue(self, ctx: ToolContext, query: str) -> ToolResult:
        """Offline with no saved answer for this search: the catalogue kept on the car still knows what is near."""
        catalogue = self.cached_catalogue()
        wanted = norm(query)
        hits = [] if catalogue is None else [
            {"id": r.id, "name": r.name, "name_zh": r.name_zh, "cuisine": r.cuisine, "distance_km": r.distance_km}
            for r in sorted(catalogue.restaurants, key=lambda r: r.distance_km)
            if wanted and (wanted in norm(r.cuisine) or wanted in norm(r.name) or wanted in r.name_zh
                           or any(wanted in norm(n) for i in r.items for n in i.names))
        ]
        data = {"restaurants": hits, "source": "saved-catalogue"}
        if not hits:
            return ToolResult(ok=True, data=data, say=(
                "离线中，保存的菜单里没有找到。" if _zh(ctx)
                else f"I'm offline and found nothing for {query} on the saved menus."))
        top = hits[0]
        return ToolResult(ok=True, data=data, say=(
            f"离线中。保存的菜单里最近的是{top['name_zh']}，{top['distance_km']}公里。" if _zh(ctx)
            else f"I'm offline, but from the saved menus {top['name']} is {top['distance_km']} kilometres away."))

    # ------------------------------------------------------------ order (runs after the driver said yes)

    def _delivery_address(self, wanted: str | None) -> tuple[str, str]:
        """(address sent to the service, how the driver hears it): a saved place, the current destination, home."""
        places = self.config.vehicle.places
        if wanted:
            w = wanted.casefold().strip().removeprefix("the ").removeprefix("my ")
            for place in places:
                if w in (place.name.casefold(), *(a.casefold() for a in place.aliases)):
                    return place.address, place.name
            return wanted, wanted
        vehicle = self.services.get("vehicle")
        route = None
        try:
            route = vehicle.snapshot().get("route") if vehicle is not None else None
        except Exception:
            route = None
        if route and route.get("address"):
            return route["address"], route.get("destination") or route["address"]
        home = next((p for p in places if p.name == "home"), places[0] if places else None)
        return (home.address, home.name) if home else ("home", "home")

    async def _order(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        catalogue = await self.catalogue()
        if catalogue is None:
            return ToolResult(ok=False, error="no catalogue", say=(
                "我还没有拿到菜单。" if _zh(ctx) else "I don't have the menus yet."))
        # The arguments are already the catalogue's names (prepared and confirmed): price them again as they are.
        outcome = prepare_order(catalogue, args, None, ctx.language)
        if outcome.quote is None:
            why = outcome.problem or (outcome.question.text if outcome.question else "not on the menu")
            return ToolResult(ok=False, error=why, say=why)
        quote = outcome.quote
        limit = self.config.services.spend_limit
        if quote.total > limit:
            return ToolResult(ok=False, error=f"order total {quote.total} is over the spend limit {limit:g}", say=(
                f"超过了{limit:g}元的消费上限。" if _zh(ctx)
                else f"That is {quote.total:g} yuan, over your {limit:g} yuan spend limit."))
        address, address_said = self._delivery_address(args.get("delivery_address"))
        body = {
            "restaurant_id": quote.restaurant.id,
            "items": quote.body_items(),
            "delivery_address": address,
            # The price the driver agreed to: the service refuses (409) rather than charge another one.
            "expected_total": quote.total,
            "currency": self.config.services.currency,
        }
        queued = await self.access.queue(
            service="meals", action="order_meal", method="POST", path="/orders", body=body,
            summary=describe(quote, ctx.language), language=ctx.language,
        )
        data = {"quote": quote.as_dict(), "delivery_address": address_said, "outbox": _outbox_view(queued.entry)}
        if queued.finished and queued.state == DELIVERED:
            order = (queued.entry.result or {}).get("order", {})
            data["order"] = order
            eta = order.get("eta_minutes", 25)
            say = (f"已下单，大约{eta}分钟送到{address_said}。" if _zh(ctx)
                   else f"Ordered. It should arrive at {address_said} in about {eta} minutes.")
            return ToolResult(ok=True, data=data, say=say)
        if queued.finished:
            return self._finished_badly(ctx, queued, data)
        data["queued"] = True
        return ToolResult(ok=True, data=data, say=_queued_text(ctx, queued, "下单", "place the order"))

    def _finished_badly(self, ctx: ToolContext, queued: Queued, data: dict[str, Any]) -> ToolResult:
        entry = queued.entry
        reason = (entry.last_error or "").split(": ", 1)[-1]
        say = outcome_text(entry, entry.state, reason, expiry_minutes=self.config.outbox.expiry_minutes)
        return ToolResult(ok=False, data=data, error=reason or entry.state, say=say)

    # ------------------------------------------------------------ status (read-only)

    async def _status(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        store = self.access.store
        order_id = args.get("order_id")
        latest = None if order_id else await asyncio.to_thread(store.latest, service="meals", action="order_meal")
        if latest is not None and latest.is_open:
            offline = latest.attempts == 0 or not self.access.monitor.is_online("meals")
            waiting = (("还在等网络恢复" if _zh(ctx) else "waiting for the connection") if offline
                       else ("正在重试" if _zh(ctx) else "still being sent"))
            say = (f"{latest.summary}已排队，{waiting}，下单后会告诉您。" if _zh(ctx)
                   else f"Your order of {latest.summary} is queued, {waiting}. I'll tell you when it's placed.")
            return ToolResult(ok=True, data={"outbox": _outbox_view(latest), "queued": True}, say=say)
        if latest is not None and latest.state in (FAILED, EXPIRED):
            reason = (latest.last_error or latest.state).split(": ", 1)[-1]
            say = (f"您上一单{latest.summary}没有下成：{reason}。" if _zh(ctx)
                   else f"Your last order, {latest.summary}, was not placed: {reason}.")
            return ToolResult(ok=True, data={"outbox": _outbox_view(latest)}, say=say)
        order_id = order_id or _order_id(latest)
        if order_id is None:
            return ToolResult(ok=True, data={"order": None},
                              say="您目前没有订单。" if _zh(ctx) else "You have no food order right now.")
        client = self.access.client("meals")
        try:
            read = await self.access.read("meals", f"order:{order_id}", lambda: client.order(order_id))
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return ToolResult(ok=False, error="offline and no saved status", say=(
                "现在连不上，也没有保存的状态。" if _zh(ctx)
                else "I can't reach the restaurant service right now, and I have no saved status."))
        order = read.data
        lines = order.get("items") or [{}]
        item = lines[0].get("name", "order") + (" and more" if len(lines) > 1 else "")
        if _zh(ctx):
            say = {"cancelled": "您的订单已取消。", "delivered": "您的订单已送达。"}.get(
                order["status"],
                f"您的订单{_STATUS_ZH.get(order['status'], order['status'])}，大约{order['eta_minutes']}分钟送到。")
            if read.source == "cache":
                say = f"{read.as_of('zh')}的信息：{say}"
        else:
            say = {"cancelled": f"Your {item} order is cancelled.", "delivered": f"Your {item} was delivered."}.get(
                order["status"], f"Your {item} is {order['status']}, about {order['eta_minutes']} minutes away.")
            if read.source == "cache":
                say = f"{_cap(read.as_of('en'))}, " + say[0].lower() + say[1:]
        return ToolResult(ok=True, data={"order": order, "source": read.source,
                                         "age_seconds": round(read.age_seconds)}, say=say)

    # ------------------------------------------------------------ cancel (runs after the driver said yes)

    async def _cancel(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        store = self.access.store
        none_say = "没有可以取消的订单。" if _zh(ctx) else "There is no order to cancel."
        if args.get("order_id"):
            target, order_id = None, args["order_id"]
            summary = f"订单{order_id}" if _zh(ctx) else f"order {order_id}"
        else:
            target = await asyncio.to_thread(store.latest, service="meals", action="order_meal")
            if target is None or target.state in (FAILED, EXPIRED, CANCELLED):
                return ToolResult(ok=False, error="there is no order to cancel", say=none_say)
            order_id = _order_id(target)
            summary = (f"您的{target.summary.split('，')[0]}" if _zh(ctx)
                       else f"your order of {target.summary.rsplit(', ', 1)[0]}")
            if target.is_open and not target.ever_sent:
                # Never left the car: withdraw it here, nothing to tell the restaurant.
                try:
                    await asyncio.to_thread(store.cancel, target.id)
                except Exception:
                    target = await asyncio.to_thread(store.get, target.id)  # it just started sending
                else:
                    return ToolResult(
                        ok=True, data={"outbox": _outbox_view(await asyncio.to_thread(store.get, target.id))},
                        say="已取消，订单还没有发出。" if _zh(ctx) else "Cancelled. The order had not been sent yet.")
        path = f"/orders/{order_id}/cancel" if order_id else "/orders/{order_id}/cancel"
        depends_on = None if order_id else target.key  # type: ignore[union-attr]
        queued = await self.access.queue(
            service="meals", action="cancel_order", method="POST", path=path, body={}, summary=summary,
            language=ctx.language, depends_on=depends_on,
        )
        data = {"outbox": _outbox_view(queued.entry)}
        if queued.finished and queued.state == DELIVERED:
            return ToolResult(ok=True, data=data, say="订单已取消。" if _zh(ctx) else "Your order is cancelled.")
        if queued.finished and queued.state == CANCELLED:
            return ToolResult(ok=False, data=data, error="there is no order to cancel", say=none_say)
        if queued.finished:
            return self._finished_badly(ctx, queued, data)
        data["queued"] = True
        return ToolResult(ok=True, data=data, say=_queued_text(ctx, queued, "取消", "cancel it"))


_STATUS_ZH = {"placed": "已下单", "preparing": "正在制作", "on the way": "正在配送"}


def _outbox_view(entry: Entry) -> dict[str, Any]:
    return {"id": entry.id, "state": entry.state, "attempts": entry.attempts, "key": entry.key}


def _queued_text(ctx: ToolContext, queued: Queued, verb_zh: str, verb_en: str) -> str:
    if not queued.online:
        return ("现在离线，已排队，恢复网络后会" + verb_zh + "并告诉您。" if _zh(ctx)
                else f"We're offline, so I've queued it. I'll {verb_en} as soon as we're back online and let you know.")
    return ("服务响应有点慢，已排队，完成后告诉您。" if _zh(ctx)
            else f"The service is slow to answer, so I've queued it. I'll {verb_en} and tell you when it's done.")
