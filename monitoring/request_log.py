"""Sampled request log: predictions as JSONL and, only when asked, the images by predicted class.

The images land as `<dir>/<model>/<version>/images/<predicted class>/<sha256>.<ext>`, a folder
`imgclf ingest` reads as a class-folder source, so logged traffic can be relabelled and trained on.
"""

import datetime
import hashlib
import json
import logging
import os
import urllib.parse

import numpy as np

from configs import schema
from monitoring import storage

logger = logging.getLogger(__name__)

IMAGES = "images"
PREDICTIONS = "predictions"
# Leading bytes of the formats serving decodes -> the file suffix ingest expects.
MAGIC = (
    (b"\x89PNG", "png"),
    (b"\xff\xd8", "jpg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def suffix_of(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((suffix for magic, suffix in MAGIC if data.startswith(magic)), "bin")


def folder_name(label: str) -> str:
    """A class name as one path segment: a label is never joined to a path as it is."""
    return urllib.parse.quote(label, safe=" _-.") if label not in (".", "..") else f"%2E{label}"


def stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


class RequestLog:
    """Buffers log lines per model version (written by `flush`); writes images at once."""

    def __init__(self, cfg: schema.RequestLogConfig, run_id: str):
        self.cfg = cfg
        self.run_id = run_id
        self._lines: dict[tuple[str, int], list[str]] = {}

    def version_dir(self, model: str, version: int) -> str:
        return os.path.join(self.cfg.dir, model, str(version))

    def add(
        self,
        model: str,
        version: int,
        when: float,
        scores: np.ndarray,
        classes: np.ndarray,
        images: list[bytes] | None,
    ) -> None:
        """One line per image of a request: its top-k classes, and its file when images are on."""
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, : self.cfg.top_k]
        time_text = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()
        lines = self._lines.setdefault((model, version), [])
        for row, columns in enumerate(ranked):
            top = [
                {
                    "label": classes[row, column].decode("utf-8", "replace"),
                    "score": round(float(scores[row, column]), 6),
                }
                for column in columns
            ]
            entry = {"time": time_text, "model": model, "version": version, "top": top}
            if images is not None:
                try:
                    entry.update(self.write_image(model, version, top[0]["label"], images[row]))
                except Exception as error:  # noqa: BLE001 - see Recorder._write
                    logger.error("monitoring: could not log an image of %s: %s", model, error)
            lines.append(json.dumps(entry))

    def write_image(self, model: str, version: int, label: str, data: bytes) -> dict:
        sha256 = hashlib.sha256(data).hexdigest()
        relative = os.path.join(IMAGES, folder_name(label), f"{sha256}.{suffix_of(data)}")
        path = os.path.join(self.version_dir(model, version), relative)
        fs, fs_path = storage.filesystem(path)
        if not fs.exists(fs_path):  # the same bytes sent twice are stored once
            storage.write_file(path, data)
        return {"image": relative, "sha256": sha256}

    def pending(self) -> int:
        return sum(len(lines) for lines in self._lines.values())

    def flush(self, now: float) -> None:
        """Writes the buffered lines as one new file per model version (buckets cannot append)."""
        for (model, version), lines in self._lines.items():
            if not lines:
                continue
            folder = os.path.join(self.version_dir(model, version), PREDICTIONS)
            path = os.path.join(folder, f"{stamp(now)}-{self.run_id}-{len(lines)}.jsonl")
            try:
                storage.write_file(path, "".join(line + "\n" for line in lines).encode())
            except Exception as error:  # noqa: BLE001 - see Recorder._write
                # Dropped, not kept for later: a bucket that stays unreachable must not make
                # the server's memory grow.
                logger.error("monitoring: dropped %d logged predictions: %s", len(lines), error)
        self._lines = {}
