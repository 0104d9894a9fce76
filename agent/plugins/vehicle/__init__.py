"""Vehicle functions that work offline: climate, navigation, media and phone, on a vehicle-state adapter."""

from __future__ import annotations

from typing import Any

from dataclasses import replace

from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult
from agent.plugins.vehicle.state import SimulatedVehicle, VehicleAdapter, match_name


def _say(ctx: ToolContext, en: str, zh: str) -> str:
    return zh if ctx.language == "zh" else en


def _fmt_temp(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


# What a request for each tool says (see Tool.intents); English and Chinese.
INTENTS: dict[str, tuple[str, ...]] = {
    "set_climate": ("temperature", "temp", "degree", "degrees", "warm", "warmer", "cool", "cooler", "cold", "colder",
                    "hot", "heat", "heating", "chilly", "freezing", "stuffy", "fan", "blower", "ac", "a/c", "a c", "air con", "aircon", "air",
                    "climate", "defrost", "driver side", "passenger side", "back seat", "back seats", "rear", "温度", "度", "空调", "风", "冷", "热", "暖", "凉"),
    "navigate_to": ("navigate", "navigation", "take me", "go to", "go home", "drive to", "drive me", "directions",
                    "route", "head to", "get to", "get me to", "way to", "home", "work", "office", "导航", "去",
                    "到", "回家", "路线", "开往"),
    "play_media": ("play", "put on", "listen", "music", "song", "songs", "radio", "podcast", "album", "playlist",
                   "station", "rock", "jazz", "pop", "classical", "hip hop", "country", "blues", "something by",
                   "放", "播", "听", "音乐", "歌", "电台", "广播", "播客", "来点", "来一首", "爵士", "摇滚", "流行",
                   "古典"),
    "media_control": ("pause", "resume", "continue", "next", "skip", "previous", "back", "volume", "louder",
                      "quieter", "softer", "turn it up", "turn it down", "turn up", "turn down", "mute", "stop",
                      "暂停", "继续", "下一", "上一", "音量", "声音", "大声", "小声", "大一点", "小一点", "调大", "调小",
                      "换一首", "切歌", "停"),
    "call_contact": ("call", "phone", "ring", "dial", "打电话", "打给", "呼叫", "拨", "电话"),
}

class VehiclePlugin(Plugin):
    name = "vehicle"
    requires_network = False

    def __init__(self, config: Any, adapter: VehicleAdapter | None = None) -> None:
        super().__init__(config)
        self.vehicle: VehicleAdapter = adapter or SimulatedVehicle()
        self.limits = (config.vehicle.min_temperature_c, config.vehicle.max_temperature_c)

    def vocabulary(self) -> list[str]:
        words = []
        for place in self.config.vehicle.places:
            words += [place.name, *place.aliases]
        for contact in self.config.vehicle.contacts:
            words += [contact.name, *contact.aliases]
        return words

    def tools(self) -> list[Tool]:
        low, high = self.limits
        tools = [
            Tool(
                name="set_climate",
                description="Set the cabin temperature in degrees Celsius, the fan speed, or turn the air "
                "conditioning on or off.",
                parameters={
                    "type": "object",
                    "properties": {
                        "temperature_c": {"type": "number", "minimum": low, "maximum": high},
                        "zone": {"type": "string", "enum": ["all", "driver", "passenger", "rear"]},
                        "fan_level": {"type": "integer", "minimum": 0, "maximum": 7},
                        "ac": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                    "minProperties": 1,
                },
                handler=self._set_climate,
                grounded=("temperature_c", "fan_level"),
                cues={
                    "zone": ("driver", "passenger", "rear", "back seat", "back", "主驾", "副驾", "后排", "司机", "乘客"),
                    "fan_level": ("fan", "blower", "风"),
                    "ac": ("ac", "a/c", "a c", "air con", "aircon", "air conditioning", "air conditioner", "空调", "冷气"),
                },
            ),
            Tool(
                name="navigate_to",
                description="Start navigation to a destination: an address, a place name, or a saved place "
                "such as home or work.",
                parameters={
                    "type": "object",
                    "properties": {"destination": {"type": "string", "minLength": 1, "maxLength": 120}},
                    "required": ["destination"],
                    "additionalProperties": False,
                },
                handler=self._navigate_to,
                grounded=("destination",),
            ),
            Tool(
                name="play_media",
                description="Start playing music, a radio station or a podcast the driver names (song, artist, genre); "
                "not for skipping, pausing or volume.",
                parameters={
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1, "maxLength": 120},
                        "kind": {"type": "string", "enum": ["music", "radio", "podcast"]},
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
                handler=self._play_media,
                grounded=("query",),
                cues={"kind": ("radio", "podcast", "station", "fm", "电台", "播客", "广播", "music", "song", "音乐", "歌")},
            ),
            Tool(
                name="media_control",
                description="Control what is already playing: pause, resume, skip to the next or previous track, "
                "volume up or down.",
                parameters={
                    "type": "object",
                    "properties": {
                        "action": {
                            "type": "string",
                            "enum": ["pause", "resume", "next", "previous", "volume_up", "volume_down"],
                        }
                    },
                    "required": ["action"],
                    "additionalProperties": False,
                },
                handler=self._media_control,
            ),
            Tool(
                name="call_contact",
                description="Phone a contact from the driver's address book by name.",
                parameters={
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 60}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
                handler=self._call_contact,
                grounded=("name",),
            ),
        ]
        return [replace(t, intents=INTENTS.get(t.name, t.intents)) for t in tools]

    async def _set_climate(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        zone = args.get("zone", "all")
        state = self.vehicle.set_climate(
            temperature_c=args.get("temperature_c"), zone=zone, fan_level=args.get("fan_level"), ac=args.get("ac")
        )
        parts_en, parts_zh = [], []
        if "temperature_c" in args:
            t = _fmt_temp(args["temperature_c"])
            where_en = "" if zone == "all" else f" on the {zone} side" if zone != "rear" else " in the rear"
            parts_en.append(f"temperature set to {t} degrees{where_en}")
            parts_zh.append(f"温度已设为{t}度")
        if "fan_level" in args:
            parts_en.append(f"fan at level {args['fan_level']}")
            parts_zh.append(f"风量{args['fan_level']}档")
        if "ac" in args:
            parts_en.append("air conditioning on" if args["ac"] else "air conditioning off")
            parts_zh.append("空调已打开" if args["ac"] else "空调已关闭")
        en = ", ".join(parts_en).capitalize() + "."
        zh = "，".join(parts_zh) + "。"
        return ToolResult(ok=True, data={"climate": state}, say=_say(ctx, en, zh))

    async def _navigate_to(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        wanted = args["destination"].strip()
        place = match_name(wanted, [(p.name, [p.name, *p.aliases], p) for p in self.config.vehicle.places])
        label, address = (place.name, place.address) if place else (wanted, wanted)
        route = self.vehicle.navigate(label, address)
        return ToolResult(
            ok=True,
            data={"route": route},
            say=_say(ctx, f"Navigating to {label}.", f"开始导航到{_zh_place(label, place)}。"),
        )

    async def _play_media(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        playing = self.vehicle.play(args["query"], args.get("kind", "music"))
        return ToolResult(
            ok=True, data={"now_playing": playing}, say=_say(ctx, f"Playing {args['query']}.", f"正在播放{args['query']}。")
        )

    async def _media_control(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        action = args["action"]
        state = self.vehicle.media_control(action)
        en = {
            "pause": "Paused.",
            "resume": "Resuming.",
            "next": "Next track.",
            "previous": "Previous track.",
            "volume_up": "Volume up.",
            "volume_down": "Volume down.",
        }[action]
        zh = {
            "pause": "已暂停。",
            "resume": "继续播放。",
            "next": "下一首。",
            "previous": "上一首。",
            "volume_up": "音量已调高。",
            "volume_down": "音量已调低。",
        }[action]
        return ToolResult(ok=True, data={"media": state}, say=_say(ctx, en, zh))

    async def _call_contact(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        wanted = args["name"].strip()
        contact = match_name(wanted, [(c.name, [c.name, *c.aliases], c) for c in self.config.vehicle.contacts])
        if contact is None:
            return ToolResult(
                ok=False,
                error=f"no contact named {wanted}",
                say=_say(ctx, f"I couldn't find {wanted} in your contacts.", f"通讯录里没有找到{wanted}。"),
            )
        call = self.vehicle.call(contact.name, contact.number)
        return ToolResult(ok=True, data={"call": call}, say=_say(ctx, f"Calling {contact.name}.", f"正在呼叫{_zh_contact(contact)}。"))


def _zh_place(label: str, place: Any) -> str:
    if place is None:
        return label
    chinese = [a for a in place.aliases if any("\u4e00" <= ch <= "\u9fff" for ch in a)]
    return chinese[0] if chinese else label


def _zh_contact(contact: Any) -> str:
    chinese = [a for a in contact.aliases if any("\u4e00" <= ch <= "\u9fff" for ch in a)]
    return chinese[0] if chinese else contact.name
