"""What a model file must be and where it stands: sizes and sha256 from the manifest or local pins, hashing,
and the verdicts (verified, unpinned, present, missing, corrupt) with the error that says how to fix them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.core.errors import ModelError
from agent.models.manifest import ModelEntry

CHUNK_BYTES = 1 << 20

FileState = Literal["verified", "present", "missing", "corrupt", "unpinned"]


def fix_command(model_id: str) -> str:
    return f"cabin-agent models fetch {model_id}"


@dataclass(frozen=True)
class FileStatus:
    path: str
    location: Path
    state: FileState
    sha256: str | None  # expected: from the manifest or the local pin
    detail: str = ""


@dataclass(frozen=True)
class Expected:
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


def sha256_file(path: Path, progress: Any = None, task: Any = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
            if progress is not None:
                progress.advance(task, len(block))
    return digest.hexdigest()


def expected_files(entry: ModelEntry, pins: dict[str, dict[str, Any]]) -> dict[str, Expected]:
    """rel path -> what it must be: the manifest's size and sha256, completed by local pins.

    A local pin counts as published only when it records what vouched for it (a pinned archive's
    checksum); a pin taken on trust at first fetch (or by an older store, which recorded no such thing)
    does not.
    """
    # Only an archive checksum the manifest still names vouches: a new model version voids the old pins.
    vouchers = [s.sha256 for s in entry.archive_sources if s.sha256]

    def vouched(pin: dict[str, Any]) -> bool:
        return any(v in str(pin.get("vouched_by") or "") for v in vouchers)

    expected: dict[str, Expected] = {}
    for f in entry.files:
        pin = pins.get(f.path, {})
        if f.sha256 is not None:
            expected[f.path] = Expected(f.size, f.sha256, True)
        else:
            size = f.size if f.size is not None else pin.get("size")
            expected[f.path] = Expected(size, pin.get("sha256"), vouched(pin))
    for rel, pin in pins.items():
        if rel not in expected:
            expected[rel] = Expected(pin.get("size"), pin.get("sha256"), vouched(pin))
    return expected


def intact(rel: str, location: Path, want: Expected) -> FileStatus:
    if want.published:
        return FileStatus(rel, location, "verified", want.sha256)
    sha = want.sha256 or "?"
    detail = f"sha256 {sha[:12]}… recorded at first fetch; no published checksum vouches for it"
    return FileStatus(rel, location, "unpinned", want.sha256, detail)


def not_ready(status: ModelStatus) -> ModelError:
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
