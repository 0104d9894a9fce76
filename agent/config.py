"""Configuration: built-in defaults < YAML file < environment, validated once into frozen typed models.

A bad value fails fast with one line naming the key path, the value and what is allowed (exit status 78).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent.errors import ConfigError

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
    # None: all cores but one. llama.cpp's threads wait for each other at every layer; when the audio stages
    # (wake word, VAD, recognition) need a core at the same moment, a thread per core stalls generation badly
    # (measured here: 5x slower with 2 threads on 2 busy cores than with 1).
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
    engine: Literal["webrtcvad", "silero", "energy"] = "webrtcvad"
    aggressiveness: int = Field(default=2, ge=0, le=3)
    silence_ms: int = Field(default=700, ge=100, le=5000)
    max_utterance_seconds: float = Field(default=12.0, gt=0, le=60)
    no_speech_timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class AsrConfig(Section):
    # auto: the engine of the profile's default asr model for the language (whisper for en on dev, vosk on pi5).
    engine: Literal["auto", "vosk", "whisper"] = "auto"
    model: str | None = None
    # Bias recognition toward what the plugins know (menu items, contacts, places, the wake phrase).
    bias_vocabulary: bool = True
    beam_size: int = Field(default=1, ge=1, le=10)


class TtsConfig(Section):
    engine: Literal["piper"] = "piper"
    voice: str | None = None
    length_scale: float = Field(default=1.0, gt=0.2, le=3.0)
    output_rate_hz: int | None = None


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
        Place(name="home", address="12 Linden Road", aliases=["家", "回家", "我家", "家里", "house", "my place"]),
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


def control_socket_path(config: Config) -> Path:
    if config.control.socket_path is not None:
        return config.control.socket_path
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    # The fallback under /tmp is trusted only if it is ours (agent/control.py checks owner and mode): named by
    # the effective uid, the one the check compares with.
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/cabin-agent-{os.geteuid()}"
    return Path(runtime) / "cabin-agent" / "control.sock"


# ---------------------------------------------------------------- loading


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


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
        msg = error["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if msgs and msg.startswith("Input should be "):
            msg = msg[len("Input should be ") :]
        if msg not in msgs:
            msgs.append(msg)
    return f"{key}: {' or '.join(msgs)} (got {got!r})"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """CABIN_AGENT__A__B=value becomes {"a": {"b": value}}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            node[parts[-1]] = raw
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
            tree.setdefault("services", {}).setdefault(service, {})["api_key"] = path.read_text().strip()
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found", key="--config", path=str(path)) from None
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot be read ({err.strerror})", path=str(path)) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: invalid YAML ({problem})", path=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level) must be a mapping of sections (got {type(data).__name__})")
    return data


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for error in err.errors():
            by_key.setdefault(_key_path(tuple(error["loc"]))[0], []).append(error)
        (first_key, first_errors), *others = by_key.items()
        line = _describe(first_errors)
        if others:
            line += f" (and {len(others)} more)"
        raise ConfigError(line, key=_format_loc(first_key)) from None


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
