"""Small site-side state files sealed with a checksum (the site index, the packed store's meta), and
the one name a site folder gets under the cache folder.

A sealed file is ``MAGIC + blake2b(body) + "\\n" + JSON body``, written atomically and private
(0600): it names the site's files. A file whose checksum or JSON is wrong reads as damaged, never
as trusted content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedscan.common.files import atomic_write_bytes


def site_key(site_dir: Path) -> str:
    """A site folder's name under the cache folder: a hash of its resolved path."""
    return hashlib.blake2b(str(site_dir.resolve()).encode(), digest_size=10).hexdigest()


def write_sealed(path: Path, magic: bytes, document: Any) -> None:
    """Seal ``document`` into ``path`` atomically (raises OSError when it cannot)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    checksum = hashlib.blake2b(body, digest_size=16).hexdigest().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, magic + checksum + b"\n" + body, durable=False, private=True)


def read_sealed(path: Path, magic: bytes) -> tuple[bool, Any]:
    """(whether the file exists, its document or None when it is damaged)."""
    try:
        blob = path.read_bytes()
    except OSError:
        return False, None
    return True, unseal(blob, magic)


def unseal(blob: bytes, magic: bytes) -> Any:
    """The document sealed in ``blob``, or None when its checksum or JSON is wrong."""
    head, _, body = blob.partition(b"\n")
    if head != magic + hashlib.blake2b(body, digest_size=16).hexdigest().encode():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
