"""Configuration: built-in defaults < YAML file < environment, validated once into frozen typed models.

A bad value fails fast with one line naming the key path, the value and what is allowed (exit status 78);
so does a file that is no config at all (a FIFO, binary, an alias bomb, nesting thousands deep), in a second.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent.core.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/cabin-agent/config.yaml")
ENV_PREFIX = "CABIN_AGENT__"  # CABIN_AGENT__SERVICES__MEALS__API_KEY=... overrides services.meals.api_key

Language = Literal["en", "zh"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"
    # Transcripts and replies are the driver's words: only logged at debug level or when this is on.
    log_transcripts: bool = False


class ModelsConfig(Section):
    profile: str = "dev"
    # None: $STATE_DIRECTORY/models under systemd, else ~/.cache/cabin-agent/models.
    store: Path | None = None
    # None: the manifest shipped with the project (models/manifest.yaml).
    manifest: Path | None = None


class LlmConfig(Section):
    # A model id from the manifest; None picks the profile's default for the language.
    model: str | None = None
    # None: every core on a machine of two or fewer, else all cores but one. llama.cpp's threads wait for each
    # other at every layer, so a core another process takes stalls them all; but on 2 cores the daemon's own
    # audio work is light, and from outside (12 spoken requests in noise) 2 threads answered in p50 2.7 s
    # against 3.1 s with 1. Work ahead of need (prefill between turns) always runs on one.
    n_threads: int | None = Field(default=None, ge=1, le=64)
    n_ctx: int = Field(default=8192, ge=512, le=32768)
    n_batch: int = Field(default=256, ge=8, le=4096)
    n_gpu_layers: int = Field(default=0, ge=-1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_reply_tokens: int = Field(default=80, ge=8, le=1024)
    max_call_tokens: int = Field(default=96, ge=16, le=1024)
    # Turns of the drive the model sees for follow-ups ("make it two degrees warmer", "cancel that"). Only turns
    # that did something are kept; they stay in the KV cache between turns, so they cost little.
    history_turns: int = Field(default=4, ge=0, le=20)
    # A remembered turn older than this is not what a follow-up refers to.
    context_seconds: float = Field(default=180.0, gt=0, le=3600)
    # How calls are written between the turn engine and the model (agent/understanding/wire.py).
    call_format: Literal["line", "qwen"] = "line"
    # Persist the system prompt's KV cache so the first turn after a restart starts fast.
    persist_prompt_cache: bool = True
    # Constrain output with a grammar built from the tool schemas (every call parses and validates).
    constrained: bool = True
    # Speak a tool's own confirmation instead of a second model pass when the tool provides one.
    templated_confirmations: bool = True
    # The rest of a JSON key the model has begun, guessed from earlier in the context (the examples wrote every
    # key) and checked in one batch with the last decoded token; the output is the same. At most this many
    # tokens; 0: one token at a time.
    guess_tokens: int = Field(default=6, ge=0, le=32)
    # Between turns and while the driver is still speaking, evaluate the remembered turns and the words heard
    # so far into the KV cache, so a turn starts with only its last words to read.
    prefill_ahead: bool = True
    # A plugin (a service across a slow link) that has not answered by then gets "One moment." said first.
    # 0: never.
    acknowledge_after_seconds: float = Field(default=0.7, ge=0, le=30)


class AudioConfig(Section):
    input_device: str | int | None = None
    output_device: str | int | None = None
    sample_rate_hz: int = Field(default=16000, ge=8000, le=48000)
    block_ms: int = Field(default=30, ge=10, le=200)
    reconnect_max_seconds: float = Field(default=10.0, gt=0, le=300)


class WakeConfig(Section):
    # auto: the engine of the profile's default wake model for the language (pocketsphinx for en on dev, vosk on pi5).
    engine: Literal["auto", "vosk", "pocketsphinx", "openwakeword", "none"] = "auto"
    # None: "hey cabin" (en) / "你好小车" (zh).
    phrase: str | None = None
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    refractory_seconds: float = Field(default=2.0, ge=0.0, le=60.0)
    follow_up_seconds: float = Field(default=6.0, ge=0.0, le=60.0)
    openwakeword_model: Path | None = None
    # Wake phrase during playback interrupts the reply (barge-in). Off: the car woke on its own voice
    # (docs/audio.md); push-to-talk still barges in.
    barge_in: bool = False
    # English: whisper tiny.en confirms each candidate of a permissive spotter (if the model is in the store).
    verify: bool = True


class VadConfig(Section):
    # silero holds up in road noise; without its model (faster-whisper) or onnxruntime, webrtcvad, then energy.
    engine: Literal["webrtcvad", "silero", "energy"] = "silero"
    aggressiveness: int = Field(default=2, ge=0, le=3)
    silence_ms: int = Field(default=700, ge=100, le=5000)
    # A request whose words are whole ("set the temperature to 21") ends after this much silence; one that
    # trails off ("set the temperature to") waits `silence_ms`. 0 turns the short ending off.
    pause_ms: int = Field(default=250, ge=0, le=5000)
    # The words so far are transcribed after this much silence (at most pause_ms), so that the transcript is
    # ready when the pause ends rather than started then. 0: transcribe at pause_ms.
    pause_transcript_ms: int = Field(default=120, ge=0, le=5000)
    max_utterance_seconds: float = Field(default=12.0, gt=0, le=60)
    no_speech_timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class AsrConfig(Section):
    # auto: the engine of the profile's default asr model for the language (whisper for en on dev, vosk on pi5).
    engine: Literal["auto", "vosk", "whisper"] = "auto"
    model: str | None = None
    # Bias recognition toward what the plugins know (menu items, contacts, places, the wake phrase).
    bias_vocabulary: bool = True
    beam_size: int = Field(default=1, ge=1, le=10)
    # whisper: "fit" cuts the encoder's window to the request (a second of silence after it) instead of 30 s,
    # about 5x faster on a short request; "full" is faster-whisper's own 30 s window.
    whisper_window: Literal["fit", "full"] = "fit"
    # While the driver speaks, transcribe the words so far this often (an engine without streaming partials,
    # such as whisper), so the model has read them by the time the request ends. 0: only at pauses.
    partials_every_ms: int = Field(default=700, ge=0, le=10000)


class TtsConfig(Section):
    engine: Literal["piper"] = "piper"
    voice: str | None = None
    length_scale: float = Field(default=1.0, gt=0.2, le=3.0)
    output_rate_hz: int | None = None
    # onnxruntime threads for the voice. A tool's reply is synthesised after the model is done, and two threads
    # speak "Temperature set to 21 degrees." in 161 ms instead of 229 on this 2-core box; its threads do not
    # spin while idle, so a spoken answer streamed beside the model costs the model little.
    threads: int = Field(default=2, ge=1, le=16)


class ServiceEndpoint(Section):
    base_url: str = "http://127.0.0.1:8765"
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    health_path: str = "/health"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ServicesConfig(Section):
    meals: ServiceEndpoint = ServiceEndpoint()
    deliveries: ServiceEndpoint = ServiceEndpoint()
    spend_limit: float = Field(default=300.0, ge=0)
    currency: str = "CNY"


class OutboxConfig(Section):
    # None: $STATE_DIRECTORY/outbox.sqlite3 under systemd, else ~/.local/state/cabin-agent/outbox.sqlite3.
    path: Path | None = None
    expiry_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    max_attempts: int = Field(default=20, ge=1, le=1000)


class ConnectivityConfig(Section):
    probe_interval_seconds: float = Field(default=5.0, gt=0, le=600)
    probe_timeout_seconds: float = Field(default=1.5, gt=0, le=60)
    # Consecutive probes that must agree before a service flips online/offline (hysteresis).
    up_after: int = Field(default=2, ge=1, le=20)
    down_after: int = Field(default=2, ge=1, le=20)
    use_networkmanager: bool = True


class ControlConfig(Section):
    # None: $RUNTIME_DIRECTORY/control.sock under systemd, else $XDG_RUNTIME_DIR/cabin-agent/control.sock.
    socket_path: Path | None = None
    group: str | None = None
    max_request_bytes: int = Field(default=65536, ge=256, le=10_000_000)


class Place(Section):
    name: str
    address: str
    aliases: list[str] = []


class Contact(Section):
    name: str
    number: str
    aliases: list[str] = []


class VehicleConfig(Section):
    backend: Literal["simulated"] = "simulated"
    min_temperature_c: float = 16.0
    max_temperature_c: float = 30.0
    places: list[Place] = [
        Place(name="home", address="12 Linden Road", aliases=["家", "回家", "我家", "家里", "my place", "my house"]),
        Place(name="work", address="88 Century Avenue", aliases=["office", "company", "the office", "公司", "单位", "办公室"]),
        Place(name="gym", address="5 Riverside Drive", aliases=["the gym", "fitness center", "健身房"]),
    ]
    contacts: list[Contact] = [
        Contact(name="Mom", number="+86 138 0000 0001", aliases=["mum", "mother", "mommy", "mama", "ma", "妈妈", "老妈", "我妈", "妈"]),
        Contact(name="Dad", number="+86 138 0000 0003", aliases=["father", "daddy", "pop", "pops", "papa", "old man", "爸爸", "老爸", "我爸", "爸"]),
        Contact(name="Li Wei", number="+86 138 0000 0002", aliases=["李伟", "lee way", "li way"]),
        Contact(name="Zhang Min", number="+86 139 0000 0004", aliases=["张敏", "jang min", "zhang ming"]),
        Contact(name="Sarah", number="+1 555 0100", aliases=["sara"]),
    ]


class PluginsConfig(Section):
    # None: every installed plugin (entry point group cabin_agent.plugins).
    enabled: list[str] | None = None
    disabled: list[str] = []


class Config(Section):
    language: Language = "en"
    logging: LoggingConfig = LoggingConfig()
    models: ModelsConfig = ModelsConfig()
    llm: LlmConfig = LlmConfig()
    audio: AudioConfig = AudioConfig()
    wake: WakeConfig = WakeConfig()
    vad: VadConfig = VadConfig()
    asr: AsrConfig = AsrConfig()
    tts: TtsConfig = TtsConfig()
    services: ServicesConfig = ServicesConfig()
    outbox: OutboxConfig = OutboxConfig()
    connectivity: ConnectivityConfig = ConnectivityConfig()
    control: ControlConfig = ControlConfig()
    vehicle: VehicleConfig = VehicleConfig()
    plugins: PluginsConfig = PluginsConfig()

    @property
    def wake_phrase(self) -> str:
        if self.wake.phrase:
            return self.wake.phrase
        return {"en": "hey cabin", "zh": "你好小车"}[self.language]


def _state_dir() -> Path:
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cabin-agent"


def cache_dir() -> Path:
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cabin-agent"


def model_store_dir(config: Config) -> Path:
    if config.models.store is not None:
        return config.models.store
    if os.environ.get("STATE_DIRECTORY"):
        return _state_dir() / "models"
    return cache_dir() / "models"


def outbox_path(config: Config) -> Path:
    return config.outbox.path or _state_dir() / "outbox.sqlite3"


def default_llm_threads() -> int:
    """llm.n_threads when unset: every core on a machine of two or fewer, else all cores but one."""
    cores = os.cpu_count() or 2
    return cores if cores <= 2 else cores - 1


def control_socket_path(config: Config) -> Path:
    if config.control.socket_path is not None:
        return config.control.socket_path
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    # The fallback under /tmp is trusted only if it is ours (agent/app/control.py checks owner and mode): named by
    # the effective uid, the one the check compares with.
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/cabin-agent-{os.geteuid()}"
    return Path(runtime) / "cabin-agent" / "control.sock"


# ---------------------------------------------------------------- loading
#
# Every way a config can be bad ends in one ConfigError line (exit 78) within a second: the file must be a
# regular file of bounded size in UTF-8, YAML anchors and aliases are refused (an alias bomb expands a few
# hundred bytes into billions of nodes), nesting is bounded before anything recursive sees the data, and
# values are shortened in messages.

# The shipped config, every key documented, is under 7 KB; 32 KiB still holds hundreds of places and contacts,
# and parses in under half a second on a busy head unit (YAML, even libyaml, builds only ~100 KB/s there).
MAX_CONFIG_BYTES = 32 * 1024
MAX_DEPTH = 32  # mappings and lists inside each other; the deepest real key (vehicle.places.0.aliases.0) is 5
MAX_ENV_VALUE_CHARS = 4096
MAX_MESSAGE_CHARS = 300
_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxstring = _VALUE_REPR.maxother = 60
_VALUE_REPR.maxlist = _VALUE_REPR.maxtuple = _VALUE_REPR.maxset = _VALUE_REPR.maxdict = 4
_VALUE_REPR.maxlevel = 2


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` as one line of at most `limit` characters (control characters escaped, the rest cut)."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit * 2])
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _short(value: Any) -> str:
    return _VALUE_REPR.repr(value)


def _error(message: str, **context: Any) -> ConfigError:
    return ConfigError(_one_line(message), **context)


# libyaml when PyYAML has it (several times faster), else the pure-Python classes.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSES = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
_YAML_VALUE_ERRORS = (yaml.YAMLError, ValueError, OverflowError, TypeError, RecursionError)


def _screen(text: str) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before anything builds the tree.

    The parser is iterative (libyaml's too), so this is safe on any input; composing is recursive (in C for
    libyaml, where deep input overflows the stack), so it only ever sees text that passed here.
    """
    parser = _LOADER(text)
    try:
        depth = 0
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None, None, "anchors and aliases (&name, *name) are not allowed", event.start_mark
                )
            if isinstance(event, _OPENS):
                depth += 1
                if depth > MAX_DEPTH:
                    raise yaml.composer.ComposerError(
                        None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                    )
            elif isinstance(event, _CLOSES):
                depth -= 1
    finally:
        parser.dispose()


def _parse_yaml(text: str) -> Any:
    _screen(text)
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def _check_depth(data: Any, where: str) -> None:
    """Refuse structures nested deeper than MAX_DEPTH, without recursing (what comes next does)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            key = ".".join(path[:3]) + "…"
            raise _error(f"{where}: {key}: nested deeper than {MAX_DEPTH} levels", key=key)
        if isinstance(node, dict):
            stack.extend((v, (*path, _one_line(str(k), 40))) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(node))


def _read_bounded(path: Path, what: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A FIFO, device or directory is refused without
    blocking: it is opened non-blocking and checked with fstat before a single byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _error(f"{what} {path}: not found", key="--config", path=str(path)) from None
    except OSError as err:
        raise _error(f"{what} {path}: cannot be read ({err.strerror})", path=str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else (
                    "a device"
                    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "not a regular file"
                )
            )
            raise _error(f"{what} {path}: is {kind}, not a regular file", path=str(path))
        if st.st_size > limit:
            raise _error(f"{what} {path}: {st.st_size} bytes, more than the {limit} allowed", path=str(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(limit + 1)
    except OSError as err:
        raise _error(f"{what} {path}: cannot be read ({err.strerror})", path=str(path)) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > limit:  # it grew after the fstat
        raise _error(f"{what} {path}: more than the {limit} bytes allowed", path=str(path))
    return data


def _format_loc(loc: tuple[Any, ...]) -> str:
    return _one_line(".".join(_one_line(str(part), 40) for part in loc), 120) or "(top level)"


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds, directly or as the items of a list (`places: list[Place]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _key_path(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[str]]:
    """The error location as the driver's config keys, and the keys allowed where the last one sits.

    List indexes are kept (`vehicle.places.0.name`); pydantic's union-branch tags (`audio.input_device.str`)
    are not keys and are dropped.
    """
    current: type[BaseModel] | None = Config
    keys: list[Any] = []
    allowed: list[str] = []
    for part in loc:
        if isinstance(part, int):
            keys.append(part)
            continue
        if current is None:
            continue  # inside a leaf value: a union-branch tag such as "str" or "int"
        allowed = sorted(current.model_fields)
        keys.append(part)
        field = current.model_fields.get(part)
        current = _section_of(field.annotation) if field is not None else None
    return tuple(keys), allowed


def _describe(errors: list[dict[str, Any]]) -> str:
    """One line for the errors at one key (several when a value matched none of a union's types)."""
    first = errors[0]
    loc, allowed = _key_path(tuple(first["loc"]))
    key = _format_loc(loc)
    got = first.get("input")
    if first["type"] == "extra_forbidden":
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown key{hint}"
    msgs: list[str] = []
    for error in errors:
        msg = _one_line(error["msg"], 120)
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if msgs and msg.startswith("Input should be "):
            msg = msg[len("Input should be ") :]
        if msg not in msgs:
            msgs.append(msg)
    return f"{key}: {' or '.join(msgs)} (got {_short(got)})"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """CABIN_AGENT__A__B=value becomes {"a": {"b": value}}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        if len(parts) > MAX_DEPTH:
            raise _error(
                f"{name[:60]}…: nested deeper than {MAX_DEPTH} levels", key=_format_loc(tuple(parts[:3]))
            )
        if len(raw) > MAX_ENV_VALUE_CHARS:
            raise _error(
                f"{_one_line(name, 80)}: value longer than {MAX_ENV_VALUE_CHARS} characters", key=name
            )
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # CABIN_AGENT__LLM=x and CABIN_AGENT__LLM__N_THREADS=2 together
                raise _error(
                    f"{_one_line(name, 80)}: {'.'.join(parts[:-1])} is also set as a value", key=name
                )
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise _error(f"{_one_line(name, 80)}: {'.'.join(parts)} is also set as a section", key=name)
        try:
            node[parts[-1]] = _parse_yaml(raw) if raw.strip() else raw
        except _YAML_VALUE_ERRORS:
            node[parts[-1]] = raw  # not YAML (or an alias, or too deep): the text itself
    return tree


def _credential_overrides() -> dict[str, Any]:
    """Secrets passed by systemd's LoadCredential= (files named meals-api-key, deliveries-api-key)."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        return {}
    tree: dict[str, Any] = {}
    for service in ("meals", "deliveries"):
        path = Path(creds) / f"{service}-api-key"
        if path.is_file():
            raw = _read_bounded(path, "credential", MAX_ENV_VALUE_CHARS)
            try:
                secret = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise _error(f"credential {path}: not UTF-8 text", path=str(path)) from None
            tree.setdefault("services", {}).setdefault(service, {})["api_key"] = secret
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    raw = _read_bounded(path, "config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise _error(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
            path=str(path),
        ) from None
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise _error(f"{where}: invalid YAML ({_one_line(str(problem), 120)})", path=str(path)) from None
    except (ValueError, OverflowError, TypeError) as err:
        # A scalar YAML accepts but Python cannot hold: a 13th month, an int of 5,000 digits.
        raise _error(f"{path}: invalid YAML value ({_one_line(str(err), 120)})", path=str(path)) from None
    except RecursionError:  # belt and braces: the loader bounds nesting itself
        raise _error(f"{path}: nested too deeply", path=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _error(f"{path}: (top level) must be a mapping of sections (got {type(data).__name__})")
    _check_depth(data, str(path))
    return data


def validate(data: dict[str, Any]) -> Config:
    _check_depth(data, "config")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for error in err.errors(include_url=False):
            by_key.setdefault(_key_path(tuple(error["loc"]))[0], []).append(error)
        (first_key, first_errors), *others = by_key.items()
        line = _describe(first_errors)
        if others:
            line += f" (and {len(others)} more)"
        if len(line) > MAX_MESSAGE_CHARS:
            # Keep the count of further problems visible when the first one is long.
            more = f" (and {len(others)} more)" if others else ""
            line = _one_line(_describe(first_errors), MAX_MESSAGE_CHARS - len(more)) + more
        raise _error(line, key=_format_loc(first_key)) from None


def load_config(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the configuration.

    `path` None means $CABIN_AGENT_CONFIG, else /etc/cabin-agent/config.yaml if it exists, else defaults only.
    An explicitly named file that does not exist is an error.
    """
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    explicit = path if path is not None else environ.get("CABIN_AGENT_CONFIG")
    if explicit:
        data = read_yaml(Path(explicit))
    elif DEFAULT_CONFIG_PATH.is_file():
        data = read_yaml(DEFAULT_CONFIG_PATH)
    data = _merge(data, _credential_overrides())
    data = _merge(data, _env_overrides(environ))
    return validate(data)
