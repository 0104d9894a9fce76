"""Vehicle functions that work offline: climate, navigation, media and phone, on a vehicle-state adapter."""

from __future__ import annotations

import re
from typing import Any

from agent.core.words import numbers_in
from agent.plugins.base import Plugin, Prepared, Question, Tool, ToolContext, ToolExample, ToolResult
from agent.plugins.vehicle.state import SimulatedVehicle, VehicleAdapter, match_name

ZONES = ["all", "driver", "passenger", "rear"]
MEDIA_KINDS = ["music", "radio", "podcast", "audiobook"]
MEDIA_ACTIONS = ["pause", "resume", "next", "previous", "volume_up", "volume_down"]


def _say(ctx: ToolContext, en: str, zh: str) -> str:
    return zh if ctx.language == "zh" else en


def _fmt_temp(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _ex(utterance: str, **arguments: Any) -> ToolExample:
    return ToolExample(utterance, arguments)


CLIMATE_EXAMPLES = (
    _ex("set the temperature to 21", temperature_c=21),
    _ex("uh can you make it twenty three in here", temperature_c=23),
    _ex("it's freezing", temperature_change_c=2),
    _ex("a bit cooler please", temperature_change_c=-1),
    _ex("it's boiling in here", temperature_change_c=-2),
    _ex("warm up the passenger side a little", temperature_change_c=1, zone="passenger"),
    _ex("my side's too hot", temperature_change_c=-1, zone="driver"),
    _ex("passenger side to twenty four", temperature_c=24, zone="passenger"),
    _ex("turn off the AC", ac=False),
    _ex("fan on three", fan_level=3),
    _ex("温度调到二十二度", temperature_c=22),
    _ex("有点热", temperature_change_c=-1),
    _ex("副驾温度高一点", temperature_change_c=1, zone="passenger"),
    _ex("我这边太冷了", temperature_change_c=2, zone="driver"),
    _ex("后排调到25度", temperature_c=25, zone="rear"),
    _ex("把空调打开", ac=True),
    _ex("风量调小一点", fan_level=1),
)
NAVIGATION_EXAMPLES = (
    _ex("take me home", destination="home"),
    _ex("I need to get to the airport", destination="airport"),
    _ex("find me a route to the nearest gas station", destination="nearest gas station"),
    _ex("let's go to the office", destination="office"),
    _ex("navigate to the mall, no wait, the train station", destination="train station"),
    _ex("no, I said the airport", destination="airport"),
    _ex("导航去公司", destination="公司"),
    _ex("我要去火车站", destination="火车站"),
    _ex("回家", destination="家"),
    _ex("导航去公园，不对，去图书馆", destination="图书馆"),
)
PLAY_EXAMPLES = (
    _ex("play some jazz", query="jazz"),
    _ex("play music", ),
    _ex("I wanna hear Hotel California", query="Hotel California"),
    _ex("switch on the radio", kind="radio"),
    _ex("continue my audiobook", kind="audiobook"),
    _ex("放一首周杰伦的歌", query="周杰伦"),
    _ex("来点音乐"),
    _ex("听一下交通广播", query="交通广播", kind="radio"),
    _ex("开一下电台", kind="radio"),
    _ex("听听收音机", kind="radio"),
)
CONTROL_EXAMPLES = (
    _ex("skip this song", action="next"),
    _ex("ugh this one's bad, next", action="next"),
    _ex("pause it, no wait, skip it", action="next"),
    _ex("go back a song", action="previous"),
    _ex("louder", action="volume_up"),
    _ex("pause the music", action="pause"),
    _ex("声音小一点", action="volume_down"),
    _ex("换首歌", action="next"),
    _ex("换个电台", action="next"),
    _ex("继续播放", action="resume"),
)
CALL_EXAMPLES = (
    _ex("call mom", name="mom"),
    _ex("can you ring Sarah for me", name="Sarah"),
    _ex("get Li Wei on the phone", name="Li Wei"),
    _ex("给李伟打个电话", name="李伟"),
    _ex("打给我爸", name="我爸"),
)

CLIMATE_CUES = {
    "zone": ("driver", "passenger", "rear", "back seat", "back", "my side", "her side", "his side", "wife",
             "husband", "kids", "主驾", "副驾", "后排", "后座", "司机", "乘客", "我这边", "她那边", "他那边"),
    "fan_level": ("fan", "blower", "风"),
    "ac": ("ac", "a/c", "a c", "air con", "aircon", "air conditioning", "air conditioner", "cooling",
           "空调", "冷气"),
}


# Words that say which way the cabin should go, longest first ("colder" before "cold", "太热" before "热").
_WARMER = ("a lot warmer", "much warmer", "warmer", "warm it up", "warm up", "heat it up", "turn up the heat",
           "heat up", "hotter", "i'm cold", "im cold", "it's cold", "its cold", "so cold", "too cold", "chilly",
           "freezing", "暖和", "暖一点", "调高", "高一点", "升高", "冷死", "太冷", "好冷", "有点冷", "很冷", "冻")
_COOLER = ("a lot cooler", "much cooler", "cooler", "cool it down", "cool down", "colder", "too hot", "way too hot",
           "so hot", "it's hot", "its hot", "too warm", "stuffy", "boiling", "roasting", "调低", "低一点", "降低",
           "凉快", "凉一点", "热死", "太热", "好热", "有点热", "很热", "闷")
_STRONG = ("a lot", "much", "way too", "so ", "really", "freezing", "boiling", "roasting", "死", "太", "好冷", "好热")
# A change is decoded only when the driver said which way: "passenger side to nineteen" is a setting, and a small
# model given the choice writes a made-up change instead.
CHANGE_CUES = (*_WARMER, *_COOLER, "up", "down", "raise", "lower", "increase", "decrease", "bump", "higher",
               "by", "more", "less", "a bit", "a little", "a touch", "warm", "cool", "heat", "hot", "cold",
               "升", "降", "高", "低", "暖", "凉", "冷", "热", "加", "减")
_FAN_UP = ("fan up", "more air", "more fan", "fan higher", "turn up the fan", "stronger fan", "风大", "风量大", "加大风")
_FAN_DOWN = ("fan down", "less air", "less fan", "fan lower", "turn down the fan", "weaker fan", "风小", "风量小",
             "减小风", "风太大")


# Parts of the car no tool controls, as drivers name them: (words, English name, Chinese name).
_OTHER_PARTS = (
    (("window", "车窗", "窗户", "窗"), "windows", "车窗"),
    (("sunroof", "moonroof", "天窗"), "sunroof", "天窗"),
    (("wiper", "雨刷", "雨刮"), "wipers", "雨刷"),
    (("seat", "座椅", "座位"), "seats", "座椅"),
    (("mirror", "后视镜"), "mirrors", "后视镜"),
    (("headlight", "light", "大灯", "车灯", "灯"), "lights", "车灯"),
    (("door", "lock", "车门", "门锁"), "doors", "车门"),
    (("trunk", "boot", "后备箱", "尾箱"), "trunk", "后备箱"),
    (("cruise", "巡航"), "cruise control", "定速巡航"),
    (("charging", "charge port", "充电"), "charging", "充电"),
    (("recirculat", "内循环", "外循环"), "air recirculation", "内外循环"),
)
# Words that do name the cabin's climate, so a request naming another part as well is still one for it.
_CLIMATE_WORDS = ("temperature", "degree", "°", "air con", "a/c", "aircon", "air conditioning", "fan", "blower",
                  "温度", "度", "空调", "冷气", "风量", "风")


def other_car_part(text: str) -> tuple[str, str] | None:
    """The car part the words are about, when it is one no tool controls ("roll the rear window down")."""
    t = text.casefold()
    for words, en, zh in _OTHER_PARTS:
        if any(w in t for w in words):
            return en, zh
    return None


def _said(text: str, phrases: tuple[str, ...]) -> str | None:
    t = " ".join(text.casefold().split())
    return next((p for p in phrases if p in t), None)


# Which zone the words name; the model often writes the temperature and leaves the zone out.
_ZONE_WORDS = {
    "driver": ("driver", "driver's", "my side", "主驾", "司机", "我这边", "驾驶位"),
    "passenger": ("passenger", "passenger's", "her side", "his side", "my wife", "副驾", "乘客", "她那边", "他那边"),
    "rear": ("rear", "back seat", "back seats", "the back", "backseat", "the kids", "后排", "后座"),
    "all": ("all zones", "every zone", "everyone", "whole car", "全车", "所有区域"),
}


def zone_said(text: str) -> str | None:
    """The one zone the driver named ("passenger side to 19", "后排调到23"), or None (none, or two of them)."""
    t = " ".join(text.casefold().split())
    found = {zone for zone, words in _ZONE_WORDS.items()
             if any((w in t) if _cjk_word(w) else re.search(rf"(?<![a-z']){re.escape(w)}(?![a-z])", t) for w in words)}
    return found.pop() if len(found) == 1 else None


def _cjk_word(word: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in word)


def relative_temperature(text: str) -> int | None:
    """+1/+2 for "warmer" / "I'm freezing", -1/-2 for "a bit cooler" / "way too hot", None when not said."""
    up, down = _said(text, _WARMER), _said(text, _COOLER)
    if up is None and down is None:
        return None
    # The longer phrase is the one meant: "colder" is a wish to cool, "cold" a complaint to warm.
    sign = 1 if down is None or (up is not None and len(up) > len(down)) else -1
    return sign * (2 if _said(text, _STRONG) else 1)


_SAME_AGAIN = ("too", "as well", "same", "also", "也", "一样", "同样")
_MEDIA_KIND_WORDS = {
    "radio": "radio", "收音机": "radio", "电台": "radio", "广播": "radio", "podcast": "podcast", "播客": "podcast",
    "audiobook": "audiobook", "audio book": "audiobook", "有声书": "audiobook", "music": "music", "音乐": "music",
}


def fan_words(text: str) -> int | None:
    """A fan level said in words: off 0, lowest 1, full 7 (the numbers are read by the model)."""
    t = text.casefold()
    if not any(w in t for w in ("fan", "blower", "风")):
        return None
    if any(w in t for w in ("max", "full", "highest", "all the way up", "最大", "最高", "开到最")):
        return 7
    if any(w in t for w in ("lowest", "minimum", "min ", "最小", "最低")):
        return 1
    if re.search(r"\boff\b", t) or any(w in t for w in ("关掉风", "风关", "关风")):
        return 0
    return None


def relative_fan(text: str) -> int | None:
    if _said(text, _FAN_DOWN):
        return -1
    return 1 if _said(text, _FAN_UP) else None


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

    def state(self) -> dict[str, Any]:
        snap = self.vehicle.snapshot()
        return {"climate": snap["climate"], "route": snap["route"], "media": snap["media"]}

    def tools(self) -> list[Tool]:
        low, high = self.limits
        return [
            Tool(
                name="set_climate",
                description="cabin temperature (absolute, or a change such as +2 warmer / -1 cooler), fan "
                "speed, air conditioning on or off (not windows, seats, wipers or lights)",
                parameters={
                    "type": "object",
                    "properties": {
                        "temperature_c": {"type": "number", "minimum": low, "maximum": high},
                        "temperature_change_c": {"type": "number", "minimum": -10, "maximum": 10},
                        "zone": {"type": "string", "enum": ZONES},
                        "fan_level": {"type": "integer", "minimum": 0, "maximum": 7},
                        "ac": {"type": "boolean"},
                    },
                    # Nothing said ("it's cold"): an empty call, and the car asks for a temperature.
                    "additionalProperties": False,
                },
                handler=self._set_climate,
                grounded=("temperature_c", "fan_level"),
                cues={**CLIMATE_CUES, "temperature_change_c": CHANGE_CUES},
                mentions={"temperature_c": ("temperature", "temp", "degree", "degrees", "warm", "cool", "温度", "度"),
                          "temperature_change_c": (*_WARMER, *_COOLER)},
                examples=CLIMATE_EXAMPLES,
            ),
            Tool(
                name="navigate_to",
                description="start navigation to a destination: a place, an address, or a saved place such as "
                "home or work",
                parameters={
                    "type": "object",
                    "properties": {"destination": {"type": "string", "minLength": 1, "maxLength": 120}},
                    "required": ["destination"],
                    "additionalProperties": False,
                },
                handler=self._navigate_to,
                grounded=("destination",),
                examples=NAVIGATION_EXAMPLES,
                questions={"destination": ("Where would you like to go?", "您想去哪里？")},
            ),
            Tool(
                name="play_media",
                description="start playing music, a song, an artist or genre, a radio station, a podcast or an "
                "audiobook (not for pause, skip or volume)",
                parameters={
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1, "maxLength": 120},
                        "kind": {"type": "string", "enum": MEDIA_KINDS},
                    },
                    "additionalProperties": False,
                },
                handler=self._play_media,
                grounded=("query",),
                cues={"kind": ("radio", "podcast", "station", "fm", "am", "episode", "audiobook", "audio book",
                               "book", "电台", "播客", "广播", "有声书", "听书", "小说", "music", "song", "音乐", "歌")},
                examples=PLAY_EXAMPLES,
            ),
            Tool(
                name="media_control",
                description="control the music or radio already playing: pause, resume, next or previous track, "
                "volume up or down",
                parameters={
                    "type": "object",
                    "properties": {"action": {"type": "string", "enum": MEDIA_ACTIONS}},
                    "required": ["action"],
                    "additionalProperties": False,
                },
                handler=self._media_control,
                examples=CONTROL_EXAMPLES,
                questions={"action": ("Pause, skip, or change the volume?", "暂停、切歌还是调音量？")},
            ),
            Tool(
                name="call_contact",
                description="phone a contact from the driver's address book by name",
                parameters={
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 60}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
                handler=self._call_contact,
                grounded=("name",),
                examples=CALL_EXAMPLES,
                questions={"name": ("Who should I call?", "要打给谁？")},
            ),
        ]

    # ------------------------------------------------------------ before a call runs

    async def prepare(self, ctx: ToolContext, tool: str, arguments: dict[str, Any]) -> Prepared:
        args = dict(arguments)
        if tool == "set_climate":
            return self._prepare_climate(ctx, args)
        if tool == "navigate_to" and args.get("destination"):
            place = self._place(args["destination"])
            if place is not None:
                args["destination"] = place.name
        if tool == "play_media" and args.get("query"):
            # "打开收音机", "put on the radio": the query names the kind of thing to play, nothing more.
            kind = _MEDIA_KIND_WORDS.get(args["query"].strip().casefold().removeprefix("the "))
            if kind is not None:
                args.pop("query")
                args["kind"] = kind
        if tool == "call_contact" and args.get("name"):
            contact = self._contact(args["name"])
            if contact is None:
                # Not in the address book (or misheard): ask, naming who is, rather than give up.
                names = [c.name for c in self.config.vehicle.contacts][:4]
                return Prepared(args, question=Question("name", _say(
                    ctx, f"I couldn't find {args['name']} in your contacts. Who should I call?",
                    f"通讯录里没有找到{args['name']}。要打给谁？"), tuple(names)))
            args["name"] = contact.name
        return Prepared(args)

    def _prepare_climate(self, ctx: ToolContext, args: dict[str, Any]) -> Prepared:
        said = ctx.utterance
        part = other_car_part(said) if said else None
        if part is not None and not _said(said, _CLIMATE_WORDS) and not re.search(r"\bac\b", said.casefold()):
            # "座椅加热调到二档", "roll the rear window down": about another part of the car, not the cabin air.
            return Prepared(args, applies=False, problem=_say(
                ctx, f"Sorry, I can't control the {part[0]} in this car.", f"抱歉，我控制不了{part[1]}。"))
        climate = self.vehicle.snapshot()["climate"]
        if "zone" not in args and said and (zone := zone_said(said)) is not None:
            args["zone"] = zone
        change = args.pop("temperature_change_c", None)
        if "temperature_c" not in args and said:
            # How much warmer or cooler: the number said, else the words (a bit = 1, way too = 2). The words
            # also set the direction when the model got it backwards ("it's way too hot" is cooler).
            words = relative_temperature(said)
            if change is not None and float(abs(change)) in numbers_in(said):
                if words is not None and (change > 0) != (words > 0):
                    change = -change
            else:
                change = words  # a step nobody said is the words' step, or none ("set an alarm at 7")
        if change is not None and "temperature_c" not in args:
            zone = args.get("zone", "all")
            current = climate["zones"].get("driver" if zone == "all" else zone, 22.0)
            low, high = self.limits
            target = max(low, min(high, round(current + float(change), 1)))
            args["temperature_c"] = int(target) if float(target).is_integer() else target
            args["temperature_change_c"] = change
        if "fan_level" not in args and said:
            if (level := fan_words(said)) is not None:
                args["fan_level"] = level
            elif (step := relative_fan(said)) is not None:
                args["fan_level"] = max(0, min(7, int(climate["fan_level"]) + step))
        if "zone" in args and not ({"temperature_c", "fan_level", "ac"} & set(args)):
            # "副驾也一样", "the passenger side too": the temperature just set, for this zone as well.
            last = next((c.arguments for c in reversed(ctx.recent) if c.name == "set_climate"
                         and "temperature_c" in c.arguments), None)
            if last is not None and _said(said, _SAME_AGAIN):
                args["temperature_c"] = last["temperature_c"]
        if not ({"temperature_c", "fan_level", "ac"} & set(args)):
            return Prepared(args, question=Question("temperature_c", _say(
                ctx, "What temperature would you like?", "要调到多少度？")))
        return Prepared(args)

    def fill(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], question: Question,
             answer: str) -> dict[str, Any] | None:
        if tool == "call_contact" and question.slot == "name":
            contact = self._contact(answer)
            return {**arguments, "name": contact.name} if contact else None
        if tool == "navigate_to" and question.slot == "destination":
            place = self._place(answer)
            return {**arguments, "destination": place.name} if place else None
        return None

    def _place(self, wanted: str) -> Any:
        return match_name(wanted, [(p.name, [p.name, *p.aliases], p) for p in self.config.vehicle.places])

    def _contact(self, wanted: str) -> Any:
        return match_name(wanted, [(c.name, [c.name, *c.aliases], c) for c in self.config.vehicle.contacts])

    # ------------------------------------------------------------ the tools

    async def _set_climate(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        zone = args.get("zone", "all")
        state = self.vehicle.set_climate(
            temperature_c=args.get("temperature_c"), zone=zone, fan_level=args.get("fan_level"), ac=args.get("ac")
        )
        parts_en, parts_zh = [], []
        if "temperature_c" in args:
            t = _fmt_temp(args["temperature_c"])
            where_en = "" if zone == "all" else f" on the {zone} side" if zone != "rear" else " in the rear"
            where_zh = {"all": "", "driver": "主驾", "passenger": "副驾", "rear": "后排"}.get(zone, "")
            parts_en.append(f"temperature set to {t} degrees{where_en}")
            parts_zh.append(f"{where_zh}温度已设为{t}度")
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
        place = self._place(wanted)
        label, address = (place.name, place.address) if place else (wanted, wanted)
        route = self.vehicle.navigate(label, address)
        return ToolResult(
            ok=True,
            data={"route": route},
            say=_say(ctx, f"Navigating to {label}.", f"开始导航到{_zh_place(label, place)}。"),
        )

    async def _play_media(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        query, kind = args.get("query"), args.get("kind", "music")
        playing = self.vehicle.play(query or "", kind)
        what_en = query or {"music": "music", "radio": "the radio", "podcast": "your podcast",
                            "audiobook": "your audiobook"}[kind]
        what_zh = query or {"music": "音乐", "radio": "电台", "podcast": "播客", "audiobook": "有声书"}[kind]
        return ToolResult(ok=True, data={"now_playing": playing},
                          say=_say(ctx, f"Playing {what_en}.", f"正在播放{what_zh}。"))

    async def _media_control(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        action = args["action"]
        state = self.vehicle.media_control(action)
        en = {"pause": "Paused.", "resume": "Resuming.", "next": "Next track.", "previous": "Previous track.",
              "volume_up": "Volume up.", "volume_down": "Volume down."}[action]
        zh = {"pause": "已暂停。", "resume": "继续播放。", "next": "下一首。", "previous": "上一首。",
              "volume_up": "音量已调高。", "volume_down": "音量已调低。"}[action]
        return ToolResult(ok=True, data={"media": state}, say=_say(ctx, en, zh))

    async def _call_contact(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        wanted = args["name"].strip()
        contact = self._contact(wanted)
        if contact is None:
            return ToolResult(
                ok=False,
                error=f"no contact named {wanted}",
                say=_say(ctx, f"I couldn't find {wanted} in your contacts.", f"通讯录里没有找到{wanted}。"),
            )
        call = self.vehicle.call(contact.name, contact.number)
        return ToolResult(ok=True, data={"call": call},
                          say=_say(ctx, f"Calling {contact.name}.", f"正在呼叫{_zh_contact(contact)}。"))


def _zh_place(label: str, place: Any) -> str:
    if place is None:
        return label
    chinese = [a for a in place.aliases if any("\u4e00" <= ch <= "\u9fff" for ch in a)]
    return chinese[0] if chinese else label


def _zh_contact(contact: Any) -> str:
    chinese = [a for a in contact.aliases if any("\u4e00" <= ch <= "\u9fff" for ch in a)]
    return chinese[0] if chinese else contact.name
