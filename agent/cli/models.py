"""`cabin-agent models list|fetch|verify` and `cabin-agent doctor` (checks that say what to fix)."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.context import cli_context, command_config
from agent.core.config import DEFAULT_CONFIG_PATH, Config, model_store_dir
from agent.core.errors import CabinError, ConfigError, ModelError
from agent.models.engines import effective_engine
from agent.models.manifest import resolve
from agent.models.store import human_size, open_store

ProfileOption = Annotated[
    str | None, typer.Option("--profile", "-p", help="Profile from the manifest (default: models.profile).")
]
ModelIds = Annotated[
    list[str] | None, typer.Argument(help="Model ids (default: every model of the profile).")
]


def _store_and_ids(  # type: ignore[no-untyped-def]
    ctx: typer.Context, model_ids: list[str] | None, profile: str | None
):
    config = command_config(ctx)
    store = open_store(config)
    name = profile or config.models.profile
    if model_ids:
        for model_id in model_ids:
            store.manifest.model(model_id)  # unknown ids fail before anything is downloaded
        return store, list(model_ids), name
    return store, list(store.manifest.profile(name).models), name


def list_models(
    ctx: typer.Context,
    profile: ProfileOption = None,
    all_models: Annotated[bool, typer.Option("--all", "-a", help="Every model in the manifest.")] = False,
) -> None:
    """List models with role, language, size and state (verified, present, missing, unpinned)."""
    store, ids, name = _store_and_ids(ctx, None, profile)
    if all_models:
        ids = [m.id for m in store.manifest.models]
    defaults: dict[str, list[str]] = {}
    for role, per_language in store.manifest.profile(name).defaults.items():
        for language, model_id in per_language.items():
            defaults.setdefault(model_id, []).append(f"{role} {language}")
    rows = [("ID", "ROLE", "LANGUAGE", "SIZE", "STATUS", f"DEFAULT IN {name.upper()}")]
    for model_id in ids:
        entry = store.manifest.model(model_id)
        status = store.status(model_id)
        label = status.label + (" (in package)" if status.in_package else "")
        rows.append(
            (
                model_id,
                "/".join(entry.roles),
                ",".join(entry.languages),
                human_size(entry.download_size),
                label,
                ", ".join(defaults.get(model_id, [])) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    typer.echo(f"store: {store.root}")


def fetch(
    ctx: typer.Context,
    model_ids: ModelIds = None,
    profile: ProfileOption = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when verified.")] = False,
) -> None:
    """Download and verify models into the store (instant for models already verified)."""
    store, ids, name = _store_and_ids(ctx, model_ids, profile)
    started = time.monotonic()
    failed: list[str] = []
    for model_id in ids:
        try:
            report = store.fetch(model_id, force=force)
        except ModelError as err:
            typer.echo(f"FAIL     {model_id}: {err.message}", err=True)
            failed.append(model_id)
            continue
        verb = "fetched " if report.downloaded else "ok      "
        where = report.source if report.downloaded else f"{report.source}, {report.directory}"
        typer.echo(f"{verb} {model_id}  ({where}; {report.seconds:.2f} s)")
        if report.unpinned:
            typer.echo(
                f"UNPINNED {model_id}: no published checksum vouches for {', '.join(report.unpinned[:3])}"
                + (f" (+{len(report.unpinned) - 3})" if len(report.unpinned) > 3 else "")
                + "; only what was recorded now is checked from here on",
                err=True,
            )
    took = time.monotonic() - started
    scope = f"profile {name}" if not model_ids else f"{len(ids)} model(s)"
    if failed:
        # Raised, not typer.Exit: agent.cli.main.main runs click with standalone_mode=False, where Exit means 0.
        raise ModelError(
            f"{len(failed)} of {len(ids)} model(s) could not be fetched ({scope}, {took:.1f} s): "
            + ", ".join(failed),
            code="model-unavailable",
            models=failed,
        )
    typer.echo(f"{len(ids)} model(s) verified in {store.root} ({scope}, {took:.1f} s)")


def verify(ctx: typer.Context, model_ids: ModelIds = None, profile: ProfileOption = None) -> None:
    """Re-hash every file against its published checksum; exit non-zero naming each missing, corrupt or
    unpinned file (an unpinned file matches only what was recorded at first fetch: it cannot be verified)."""
    store, ids, name = _store_and_ids(ctx, model_ids, profile)
    bad: list[str] = []
    for model_id in ids:
        started = time.monotonic()
        status = store.verify(model_id)
        took = time.monotonic() - started
        if status.ok:
            typer.echo(f"OK    {model_id}  ({len(status.files)} file(s), {took:.2f} s)")
            continue
        bad.append(model_id)
        for problem in status.problems():
            detail = f" ({problem.detail})" if problem.detail else ""
            level = "UNPINNED" if problem.state == "unpinned" else "FAIL"
            typer.echo(f"{level:<5} {model_id}: {problem.location} {problem.state}{detail}", err=True)
        if status.usable:
            why = status.model.unpinned or "the manifest gives no sha256"
            typer.echo(f"      unpinned: {why}; pin its size and sha256 in the manifest", err=True)
        else:
            typer.echo(f"      fix: cabin-agent models fetch {model_id}", err=True)
    if bad:
        raise ModelError(
            f"{len(bad)} of {len(ids)} model(s) failed verification: {', '.join(bad)}", code="model-corrupt"
        )


# ---------------------------------------------------------------- doctor


class _Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.warned = 0

    def line(self, level: str, what: str, message: str) -> None:
        if level == "FAIL":
            self.failed += 1
        elif level == "WARN":
            self.warned += 1
        typer.echo(f"{level:<4}  {what:<14} {message}")


def _check_config(ctx: typer.Context, checks: _Checks):  # type: ignore[no-untyped-def]
    root = cli_context(ctx)
    try:
        config = root.config()
    except ConfigError as err:
        checks.line("FAIL", "config", f"{err.message} (fix the file; checking the rest with defaults)")
        return Config()
    source = root.config_path or os.environ.get("CABIN_AGENT_CONFIG")
    if source is None:
        source = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else "built-in defaults"
    checks.line(
        "OK", "config", f"valid ({source}; profile {config.models.profile}, language {config.language})"
    )
    return config


def _check_models(checks: _Checks, config) -> None:  # type: ignore[no-untyped-def]
    try:
        store = open_store(config)
        entries = store.manifest.profile_models(config.models.profile)
    except CabinError as err:
        checks.line("FAIL", "models", err.message)
        return
    fix = f"cabin-agent models fetch --profile {config.models.profile}"
    for entry in entries:
        status = store.status(entry.id)  # stamps only: doctor stays fast
        what = f"model {entry.id}"
        if status.ok:
            where = "in package" if status.in_package else "in store"
            checks.line("OK", "models", f"{entry.id} verified ({where})")
        elif status.usable:
            checks.line("WARN", "models", f"{entry.id} unpinned: no published checksum vouches for it")
        elif status.state == "present":
            checks.line(
                "WARN",
                "models",
                f"{entry.id} present but not verified yet; run: cabin-agent models verify {entry.id}",
            )
        else:
            first = status.problems()[0]
            checks.line("FAIL", "models", f"{what}: {first.location} {first.state}; run: {fix}")
    # Which model each configured engine will load ("auto": the profile default's); engines without model files
    # are skipped.
    def engine_of(role: str) -> str | None:
        try:
            return effective_engine(config, role)  # type: ignore[arg-type]
        except CabinError as err:
            checks.line("WARN", "models", f"{role} (auto): {err.message}")
            return None

    wake_engine = engine_of("wake")
    engines = {
        "llm": "llama_cpp",
        "asr": engine_of("asr"),
        "tts": config.tts.engine,
        "wake": wake_engine if wake_engine in ("vosk", "pocketsphinx") else None,
        "vad": "silero" if config.vad.engine == "silero" else None,
    }
    for role, engine in engines.items():
        if engine is None:
            continue
        try:
            chosen = resolve(config, role, engine=engine, manifest=store.manifest)
        except CabinError as err:
            checks.line("WARN", "models", f"{role} ({engine}): {err.message}")
            continue
        checks.line("OK", "models", f"{role} {config.language} ({engine}) -> {chosen}")


def _check_audio(checks: _Checks, config) -> None:  # type: ignore[no-untyped-def]
    try:
        import sounddevice
    except OSError as err:  # the module loads libportaudio at import
        checks.line("FAIL", "audio", f"PortAudio not found ({err}); fix: sudo apt-get install libportaudio2")
        return
    except ImportError:
        checks.line("FAIL", "audio", "sounddevice is not installed; fix: pip install sounddevice")
        return
    try:
        devices = list(sounddevice.query_devices())
    except Exception as err:  # PortAudioError when ALSA has no usable card
        devices = []
        reason = f" ({err})"
    else:
        reason = ""
    inputs = [d for d in devices if d.get("max_input_channels", 0) > 0]
    outputs = [d for d in devices if d.get("max_output_channels", 0) > 0]
    if not inputs:
        checks.line(
            "WARN",
            "audio",
            f"no input device{reason}; fix: connect a microphone or configure ALSA (~/.asoundrc)",
        )
    else:
        checks.line("OK", "audio", f"{len(inputs)} input device(s), e.g. {inputs[0]['name']!r}")
    if not outputs:
        checks.line(
            "WARN", "audio", "no output device; fix: connect a speaker or configure ALSA (~/.asoundrc)"
        )
    else:
        checks.line("OK", "audio", f"{len(outputs)} output device(s), e.g. {outputs[0]['name']!r}")


def _check_llama(checks: _Checks) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        checks.line("FAIL", "llama_cpp", "llama-cpp-python is not installed; fix: scripts/setup.sh")
        return
    try:
        import llama_cpp
    except Exception as err:  # a wheel built for another CPU fails here (illegal instruction aside)
        checks.line("FAIL", "llama_cpp", f"import failed ({err}); fix: rebuild it with scripts/setup.sh")
        return
    checks.line("OK", "llama_cpp", f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')} importable")


def _check_store(checks: _Checks, config) -> None:  # type: ignore[no-untyped-def]
    root = model_store_dir(config)
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    if os.access(probe, os.W_OK):
        checks.line("OK", "store", f"{root} writable")
    else:
        checks.line("WARN", "store", f"{root} not writable; fix: set models.store or run as the service user")


def doctor(ctx: typer.Context) -> None:
    """Check config, models, audio devices and the LLM runtime; print OK/WARN/FAIL and what to do."""
    checks = _Checks()
    config = _check_config(ctx, checks)
    _check_store(checks, config)
    _check_models(checks, config)
    _check_audio(checks, config)
    _check_llama(checks)
    summary = f"{checks.failed} failure(s), {checks.warned} warning(s)"
    if checks.failed:
        raise CabinError(f"doctor: {summary}", code="doctor-failed")  # exit status 1
    typer.echo(summary)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(name="models", help="List, fetch and verify models.", no_args_is_help=True)
    models_app.command("list")(list_models)
    models_app.command("fetch")(fetch)
    models_app.command("verify")(verify)
    app.add_typer(models_app, name="models")
    app.command("doctor")(doctor)
