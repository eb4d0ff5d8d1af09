"""Class-folder trees, local or in a bucket: `<source>/[<split>/]<class>/<image>`.

The label is the top-level folder under the source (or under the split folder), so images may sit
deeper inside a class folder. Names starting with "." are ignored at every level. A tree is
pre-split when its top-level folders are all among train/val/test and hold class folders.
"""

import logging
import os
from collections.abc import Iterable

import fsspec

from configs import schema
from transforms.sources import base, storage

log = logging.getLogger(__name__)


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _find(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, bool]:
    """{path: is folder} of everything under `root`, following local symlinked folders."""
    found: dict[str, bool] = {}
    local = not storage.is_remote(storage.to_uri(fs, root))
    # (folder, real paths of the folders walked to reach it): a link back into them is a cycle.
    pending = [(root, (os.path.realpath(root),) if local else ())]
    while pending:
        top, chain = pending.pop()
        for raw_path, info in fs.find(top, withdirs=True, detail=True).items():
            path = raw_path.rstrip("/")
            if path == top.rstrip("/"):
                continue
            # A bucket "folder" may also exist as a zero-byte marker object named "<folder>/".
            is_dir = info["type"] == "directory" or raw_path.endswith("/") or found.get(path, False)
            # fsspec's local walk reports a symlink as type "other" and does not enter it.
            if local and info.get("islink") and os.path.isdir(path):
                is_dir = True
                real = os.path.realpath(path)
                walked = (*chain, os.path.realpath(os.path.dirname(path)))
                if not any(_contains(real, folder) for folder in walked):
                    pending.append((path, (*chain, real)))
            found[path] = is_dir
    return found


def _relative_parts(found: dict[str, bool], root: str) -> Iterable[tuple[tuple[str, ...], bool]]:
    prefix = root.rstrip("/") + "/"
    for path, is_dir in found.items():
        parts = tuple(path[len(prefix) :].split("/")) if path.startswith(prefix) else ()
        if parts and not any(part.startswith(".") or not part for part in parts):
            yield parts, is_dir


def _layout(entries: list[tuple[tuple[str, ...], bool]]) -> bool:
    """True for a pre-split tree: only train/val/test at the top, and they hold folders."""
    folders = {parts for parts, is_dir in entries if is_dir}
    folders |= {parts[:i] for parts, _ in entries for i in range(1, len(parts))}
    top = {parts[0] for parts in folders if len(parts) == 1}
    return bool(top) and top <= set(base.SPLIT_NAMES) and any(len(p) == 2 for p in folders)


def list_units(cfg: schema.DataConfig) -> list[base.ReadUnit]:
    """One "file" unit per image of the tree; raises SourceError for a tree ingest cannot use."""
    source = cfg.source.rstrip("/") or cfg.source
    fs, root = storage.filesystem(source, cfg)
    expected = "expected <source>/<class>/<image> or <source>/{train,val,test}/<class>/<image>"
    try:
        is_dir = storage.call_with_retries(lambda: fs.isdir(root), source, cfg)
        if not is_dir:
            exists = storage.call_with_retries(lambda: fs.exists(root), source, cfg)
            what = "is a file, not a folder" if exists else "does not exist"
            raise base.SourceError(f"data.source {source} {what} ({expected})")
        found = storage.call_with_retries(lambda: _find(fs, root), source, cfg)
    except storage.RetriesExhausted as error:
        raise base.SourceError(f"data.source {source} cannot be listed: {error}") from error
    entries = list(_relative_parts(found, root))
    presplit = _layout(entries)
    depth = 2 if presplit else 1  # Path parts naming the class folder: [split,] class.

    # (split, class) -> image paths; every class folder is registered, even an empty one.
    classes: dict[tuple[str | None, str], list[str]] = {}
    split_folders: set[str] = set()
    stray: list[str] = []
    for parts, entry_is_dir in entries:
        split = parts[0] if presplit else None
        if split is not None and (entry_is_dir or len(parts) > 1):
            split_folders.add(split)
        if len(parts) < depth or (len(parts) == depth and not entry_is_dir):
            if not entry_is_dir:
                stray.append("/".join(parts))
            continue
        key = (split, parts[depth - 1])
        images = classes.setdefault(key, [])
        if len(parts) > depth and not entry_is_dir:
            images.append("/".join(parts))
    if stray:
        log.warning(
            "ignoring %d file(s) outside class folders of %s, e.g. %s", len(stray), source, stray[0]
        )
    empty_splits = sorted(split_folders - {split for split, _ in classes})
    if empty_splits:
        raise base.SourceError(
            f"split folder {empty_splits[0]} of data.source {source} has no class folders "
            f"({expected})"
        )
    for (split, name), images in sorted(classes.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        if not images:
            folder = f"{split}/{name}" if split else name
            raise base.SourceError(
                f"class folder {folder} is empty in data.source {source} "
                "(expected image files in it; add some or remove the folder)"
            )
    names = sorted({name for _, name in classes})
    if len(names) < 2:
        raise base.SourceError(
            f"data.source {source} has {len(names)} class folder(s) {names}; a classifier needs "
            f"at least 2 ({expected})"
        )
    source_uri = storage.to_uri(fs, root)
    units = [
        base.ReadUnit(kind="file", uri=f"{source_uri}/{path}", label=name, split=split)
        for (split, name), images in classes.items()
        for path in images
    ]
    return sorted(units, key=lambda unit: unit.uri)
