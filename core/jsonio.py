"""The one way imgclf writes a JSON file: whole or not at all."""

import json
import os
import uuid
from pathlib import Path


def write_json(
    path: Path, payload: dict, *, sort_keys: bool = False, durable: bool = False
) -> Path:
    """`payload` as indented JSON, written beside `path` and renamed over it, so a reader (the
    registry, a listing, a server) never sees half a file. `durable` fsyncs the file and its
    folder before returning (the registry's records, which must survive a power cut)."""
    path = Path(path)
    # A name of its own per writer: two processes writing one file never share a temporary.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path
