"""The header pass of volume ingestion: every file hashed, its slices read, grouped by series.

Only headers are read here (pixel data stays deferred on disk). A file's slice facts are kept in
the decode-once cache's header memo, named by the file's content hash, so a warm pass reads each
file once to hash it and parses no DICOM. A file that cannot join a series (not DICOM, unreadable,
a non-image object, no geometry, a byte-identical copy) is recorded with its code and left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from fedscan.common.errors import Rejected
from fedscan.common.files import atomic_write_bytes
from fedscan.common.ingest import dicom_header as header
from fedscan.common.ingest.cache import content_hash
from fedscan.common.ingest.dicom_header import DecodeLimits
from fedscan.common.ingest.rejections import TRANSIENT, Reason
from fedscan.common.ingest.series.report import FileRejection
from fedscan.common.ingest.series.slices import FileSlices, Slice, file_slices

log = logging.getLogger(__name__)
MEMO_VERSION = 1  # bump when the slice facts read from a header change


@dataclass
class Survey:
    """Files grouped into series (by SeriesInstanceUID), and those left out."""

    series: dict[str, list[FileSlices]] = field(default_factory=lambda: defaultdict(list))
    digests: dict[str, str] = field(default_factory=dict)  # relative path → content hash
    left_out: list[FileRejection] = field(default_factory=list)
    memo_hits: int = 0


@dataclass(frozen=True)
class HeaderMemo:
    """Slice facts by content hash under ``root`` (the site's cache folder)."""

    root: Path

    def _path(self, digest: str) -> Path:
        return self.root / f"series-headers-v{MEMO_VERSION}" / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> FileSlices | Rejected | None:
        try:
            entry = json.loads(self._path(digest).read_text())
            if "rejected" in entry:
                return Rejected(Reason(entry["rejected"]), str(entry["message"]))
            slices = tuple(_slice(item) for item in entry["slices"])
            return FileSlices(dict(entry["identity"]), slices)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: read the header again

    def put(self, digest: str, entry: FileSlices | Rejected) -> None:
        if isinstance(entry, Rejected):
            if entry.reason in TRANSIENT:
                return
            document: dict[str, object] = {"rejected": entry.reason.value, "message": str(entry)}
        else:
            document = {"identity": entry.identity, "slices": [asdict(s) for s in entry.slices]}
        try:
            path = self._path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(document).encode(), durable=False, private=True)
        except OSError as exc:
            log.warning("Cannot write the series header memo (%s); continuing", exc.strerror)


def _slice(item: dict) -> Slice:
    return Slice(
        **{
            **item,
            "position": tuple(item["position"]),
            "orientation": tuple(item["orientation"]),
            "spacing": tuple(item["spacing"]),
            "rescale": tuple(item["rescale"]),
        }
    )


def survey(
    site_dir: Path, files: list[str], limits: DecodeLimits, memo: HeaderMemo | None
) -> Survey:
    """Hash and read every file's header; group the usable ones by series."""
    found = Survey()
    seen: set[str] = set()
    for relative in files:
        try:
            digest = content_hash(site_dir / relative)
        except OSError as exc:
            unreadable = Rejected(Reason.UNREADABLE, f"The file cannot be read ({exc.strerror}).")
            found.left_out.append(_left_out(relative, unreadable))
            continue
        if digest in seen:
            copy = Rejected(Reason.DUPLICATE_INSTANCE, "Byte-identical to another file.")
            found.left_out.append(_left_out(relative, copy))
            continue
        seen.add(digest)
        found.digests[relative] = digest
        entry = memo.get(digest) if memo else None
        found.memo_hits += entry is not None
        if entry is None:
            entry = read_slices(site_dir / relative, relative, limits)
            if memo:
                memo.put(digest, entry)
        if isinstance(entry, Rejected):
            found.left_out.append(_left_out(relative, entry))
        else:
            found.series[entry.series].append(_relocated(entry, relative))
    return found


def _relocated(entry: FileSlices, relative: str) -> FileSlices:
    """A memo entry of a file with the same bytes elsewhere names the file as it is now."""
    if all(s.file == relative for s in entry.slices):
        return entry
    from dataclasses import replace

    return FileSlices(entry.identity, tuple(replace(s, file=relative) for s in entry.slices))


def _left_out(relative: str, rejected: Rejected) -> FileRejection:
    return FileRejection(relative, rejected.reason.value, str(rejected))


def read_slices(path: Path, relative: str, limits: DecodeLimits) -> FileSlices | Rejected:
    """A file's slices from its vetted header, or the rejection (never another exception)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on tolerated deviations
        try:
            with open(path, "rb") as handle:
                if handle.read(8).startswith((b"\x89PNG", b"\xff\xd8")):
                    return Rejected(
                        Reason.NOT_DICOM, "A volume is a DICOM series; PNG/JPEG is not read here."
                    )
            ds = header.read_header(path, limits)
            header.check_object(ds)
            header.check_transfer_syntax(ds)
            geometry = header.check_geometry(ds, limits)
            return file_slices(ds, relative, geometry.frames)
        except Rejected as rejected:
            return rejected
        except Exception as exc:  # a crafted header costs one file, never the ingestion
            return Rejected(Reason.NOT_DICOM, f"The header cannot be read ({type(exc).__name__}).")


def series_name(members: list[FileSlices], index: int, shared_folder: bool) -> str:
    """A series' local name: its folder (one file: the file), ``#n`` when a folder holds several."""
    files = sorted({s.file for m in members for s in m.slices})
    folders = {str(PurePosixPath(f).parent) for f in files}
    folder = folders.pop() if len(folders) == 1 else "."
    base = folder if folder != "." else files[0]
    return f"{base}#{index}" if shared_folder else base


def series_digest(members: list[FileSlices], digests: dict[str, str]) -> str:
    """One content name for a series: its files' hashes, sorted (order and names do not count)."""
    hashes = sorted({digests[s.file] for m in members for s in m.slices})
    return hashlib.blake2b("\n".join(hashes).encode(), digest_size=20).hexdigest()
