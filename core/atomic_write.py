"""Files written whole or not at all: beside their path, then renamed over it, so a reader (the
registry, a listing, a server) never sees half a file. The one way imgclf writes JSON."""

import json
import os
import uuid
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # `.<name>.<random>.tmp`, beside the file it replaces


def write_text(path: Path, text: str, *, durable: bool = False) -> Path:
    """Replaces `path` with `text`. `durable` fsyncs the file and its folder before returning,
    so neither a crash nor a power cut leaves a half-written file (the registry's records)."""
    path = Path(path)
    # A name of its own per writer: two processes writing one file never share a temporary.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
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
        fsync_dir(path.parent)
    return path


def write_json(
    path: Path, payload: dict, *, sort_keys: bool = False, durable: bool = False
) -> Path:
    """`payload` as indented JSON, through write_text."""
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n"
    return write_text(path, text, durable=durable)


def fsync_dir(path: Path) -> None:
    """Makes renames and creations inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
