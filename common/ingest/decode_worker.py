"""A decode worker process: ``python -m fedscan.common.ingest.decode_worker MEMORY_LIMIT``.

Reads ``(path, options)`` requests from stdin and writes ``("ok", frames,
header)`` or ``("rejected", code, message)`` replies to stdout, each a
length-prefixed pickle. Decoders run here, not in the site's main process, so
a decoder that hangs can be killed, one that crashes costs one file, and an
address-space limit stops a crafted file from exhausting the machine's memory.
Only the parent (the same fedscan installation) talks to this process.
"""

from __future__ import annotations

import os
import pickle
import resource
import struct
import sys
from pathlib import Path
from typing import IO, Any

_LENGTH = struct.Struct("!Q")


def write_message(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def read_exactly(read: Any, count: int) -> bytes | None:
    """``count`` bytes from ``read(n)``, or None at end of stream."""
    chunks, remaining = [], count
    while remaining:
        chunk = read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(read: Any) -> Any:
    header = read_exactly(read, _LENGTH.size)
    if header is None:
        return None
    payload = read_exactly(read, _LENGTH.unpack(header)[0])
    return None if payload is None else pickle.loads(payload)


def main(argv: list[str]) -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # codec chatter on stdout must never corrupt the reply stream
    memory_limit = int(argv[1]) if len(argv) > 1 else 0
    if memory_limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    from fedscan.common.errors import Rejected
    from fedscan.common.ingest.dicom import decode_file

    write_message(replies, "ready")
    requests = sys.stdin.buffer
    while (request := read_message(requests.read)) is not None:
        path, options = request
        try:
            decoded = decode_file(Path(path), options)
            write_message(replies, ("ok", decoded.frames, decoded.header))
        except Rejected as rejected:
            write_message(replies, ("rejected", rejected.reason.value, str(rejected)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
