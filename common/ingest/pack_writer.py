"""Streaming writer of a packed store's arrays: a load's frames (and masks) are appended, in path
order, to raw files of a new store generation as they are read, so ingesting an archive larger
than memory holds one file's frames at a time.

Without a folder (no cache), or once writing fails (a full disk), the frames are kept in memory
instead: a cache problem costs memory or speed, never the ingestion.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedscan.common.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class _Part:
    """One array being written: its file (or memory), shape of one frame, count and hash."""

    file: str
    frame: tuple[int, ...] | None = None
    count: int = 0
    handle: IO[bytes] | None = None
    memory: list[np.ndarray] | None = None
    hasher: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))


class PackWriter:
    """Appends frames to ``folder/<generation>.<name>.bin``; :meth:`finish` maps them back."""

    def __init__(self, folder: Path | None, generation: str) -> None:
        self.folder, self.generation = folder, generation
        self.parts: dict[str, _Part] = {}

    def append(self, name: str, frames: np.ndarray) -> None:
        """Add F frames (F×…, float32) to array ``name``."""
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        part = self.parts.setdefault(name, _Part(f"{self.generation}.{name}.bin"))
        if part.frame is None:
            part.frame = tuple(frames.shape[1:])
        elif tuple(frames.shape[1:]) != part.frame:
            raise DataError(
                f"Images of different shapes ({part.frame} and {tuple(frames.shape[1:])}) cannot "
                "form one site's samples; check the decode settings."
            )
        part.count += len(frames)
        part.hasher.update(frames.tobytes())
        if part.memory is None and self.folder is not None:
            try:
                self._write(part, frames)
                return
            except OSError as exc:
                log.warning("Cannot write the packed store (%s); keeping samples in memory",
                            exc.strerror)  # fmt: skip
                part.memory = self._read_back(part, len(frames))
        if part.memory is None:
            part.memory = []
        part.memory.append(frames)

    def _write(self, part: _Part, frames: np.ndarray) -> None:
        assert self.folder is not None
        if part.handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            part.handle = os.fdopen(os.open(self.folder / part.file, flags, 0o600), "wb")
        part.handle.write(frames.tobytes())

    def _read_back(self, part: _Part, pending: int) -> list[np.ndarray]:
        """What reached the file before it failed, into memory (the failed frames excluded)."""
        if part.handle is not None:
            part.handle.close()
            part.handle = None
        assert self.folder is not None and part.frame is not None
        written = part.count - pending
        path = self.folder / part.file
        if written == 0:
            path.unlink(missing_ok=True)
            return []
        data = np.fromfile(path, dtype=np.float32, count=written * int(np.prod(part.frame)))
        path.unlink(missing_ok=True)
        return [data.reshape(written, *part.frame)]

    def finish(self, empty: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, np.ndarray], dict]:
        """(each array: memory-mapped read-only, or in memory; their descriptions for the store's
        meta, or {} when any is in memory). ``empty``: the shape of an array with no frame."""
        arrays: dict[str, np.ndarray] = {}
        described: dict[str, Any] = {}
        on_disk = True
        for name, shape in empty.items():
            part = self.parts.get(name)
            if part is None or part.count == 0:
                arrays[name] = np.zeros(shape, dtype=np.float32)
                described[name] = {"file": "", "shape": list(shape), "digest": ""}
                continue
            assert part.frame is not None
            full = (part.count, *part.frame)
            if part.handle is not None:
                part.handle.close()
                part.handle = None
            if part.memory is not None:
                arrays[name], on_disk = np.concatenate(part.memory), False
            else:
                assert self.folder is not None
                arrays[name] = np.memmap(self.folder / part.file, np.float32, "r", shape=full)
            described[name] = {
                "file": part.file,
                "shape": list(full),
                "digest": part.hasher.hexdigest(),
            }
        return arrays, (described if on_disk and self.folder is not None else {})

    def discard(self) -> None:
        """Close and remove what was written (a failed load)."""
        for part in self.parts.values():
            if part.handle is not None:
                part.handle.close()
                part.handle = None
            if self.folder is not None:
                (self.folder / part.file).unlink(missing_ok=True)
