"""Batch prediction: images from files, folders and buckets, classified in batches by a server
(REST or gRPC) or a local SavedModel, written as JSONL, CSV or one line per image."""

import concurrent.futures
import contextlib
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import fsspec
from tqdm import tqdm

from configs import schema
from core import errors, saved_models
from serving import client
from transforms.sources import storage

logger = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:8501"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_COLUMNS = ("path", "label", "score", "top_k", "error")
# Retries of a batch the server could not take (unreachable, overloaded, timed out).
RETRIES = 3
RETRY_BACKOFF_S = 0.5


class InputError(errors.UserError):
    """An image path, bucket URL, model path or output option that cannot be used."""


@dataclass(frozen=True)
class ImageRef:
    """One image to classify: `uri` as results show it, `path` inside `fs` (None: local file)."""

    uri: str
    path: str
    fs: fsspec.AbstractFileSystem | None = None


class Predictor(Protocol):
    """What `run` needs of a target: client.RestClient, client.GrpcClient or LocalModel."""

    model_name: str
    version: int | None
    where: str

    def predict(self, images: list[bytes]) -> client.Answer: ...

    def close(self) -> None: ...


# --- inputs ---


def _list_local(item: str) -> list[ImageRef]:
    path = Path(item).expanduser()
    if path.is_file():
        return [ImageRef(item, str(path))]  # named explicitly: tried whatever its suffix
    if not path.is_dir():
        raise InputError(f"no such image file or folder: {item}")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in client.IMAGE_SUFFIXES)
    return [ImageRef(str(p), str(p)) for p in found if p.is_file()]


def _list_remote(item: str, data_cfg: schema.DataConfig) -> list[ImageRef]:
    storage.check_protocol(item)
    # data.storage_options (e.g. an S3 endpoint_url) apply to the protocol of data.source.
    fs, path = storage.filesystem(item, data_cfg.model_copy(update={"source": item}))
    try:
        if fs.isfile(path):
            return [ImageRef(item, path, fs)]
        found = fs.find(path)
    except Exception as error:  # noqa: BLE001 - every filesystem raises its own errors
        hint = "check the URL, the credentials and --set data.storage_options.KEY=VALUE"
        if storage.family_of(storage.protocol_of(item)) == "s3":
            hint = (
                "for another S3 endpoint set AWS_ENDPOINT_URL or data.storage_options.endpoint_url"
            )
        raise InputError(f"could not list {item} ({storage.describe(error)}); {hint}") from None
    if not found:
        raise InputError(f"no such image file or folder: {item}")
    images = sorted(p for p in found if Path(p).suffix.lower() in client.IMAGE_SUFFIXES)
    return [ImageRef(storage.to_uri(fs, p), p, fs) for p in images]


def list_images(items: list[str], data_cfg: schema.DataConfig) -> list[ImageRef]:
    """Files as given, folders and bucket prefixes (s3://, gs://) expanded recursively to the
    image files inside them, sorted. Only names are listed here; bytes are read per batch."""
    refs = []
    for item in items:
        refs.extend(_list_remote(item, data_cfg) if storage.is_remote(item) else _list_local(item))
    if not refs:
        suffixes = ", ".join(sorted(client.IMAGE_SUFFIXES))
        raise InputError(f"no image files ({suffixes}) in {', '.join(items)}")
    return refs


def read_images(refs: list[ImageRef]) -> list[bytes | str]:
    """Each image's bytes, or why it could not be read; remote files are fetched concurrently."""
    contents: list[bytes | str] = [""] * len(refs)
    by_filesystem: dict[int, list[int]] = {}
    for index, ref in enumerate(refs):
        if ref.fs is None:
            try:
                contents[index] = Path(ref.path).read_bytes()
            except OSError as error:
                contents[index] = f"could not read {ref.uri}: {error}"
        else:
            by_filesystem.setdefault(id(ref.fs), []).append(index)
    for indices in by_filesystem.values():
        fs = refs[indices[0]].fs
        paths = [refs[index].path for index in indices]
        try:
            fetched = fs.cat(paths, on_error="return")
        except Exception as error:  # noqa: BLE001 - a failed fetch is a row, not the end
            fetched = dict.fromkeys(paths, error)
        for index in indices:
            value = fetched.get(refs[index].path, FileNotFoundError(refs[index].path))
            if isinstance(value, bytes):
                contents[index] = value
            else:
                contents[index] = f"could not read {refs[index].uri}: {storage.describe(value)}"
    return contents


# --- targets ---


def resolve_model_path(model_path: str, version: int | None = None) -> tuple[str, int | None, Path]:
    """(name, version, SavedModel folder) for a folder of numbered versions (the newest, or
    `version`), a version folder, or a run folder (its export/)."""
    from artifacts import models

    models.require_local(model_path)
    located = saved_models.locate(model_path, version)
    return located.name, located.version, located.path


class LocalModel:
    """A SavedModel's `serving_default` signature run in this process: no server."""

    def __init__(self, model_path: str, model_name: str | None = None, version: int | None = None):
        from artifacts import models

        name, self.version, path = resolve_model_path(model_path, version)
        self.model_name = model_name or name
        self.where = str(path)
        self._model = models.ServedModel(self.model_name, self.version or 0, path)

    def predict(self, images: list[bytes]) -> client.Answer:
        from artifacts import models

        try:
            outputs = self._model.predict(images)
        except models.InvalidInputError as error:
            raise client.RejectedInput(str(error)) from None
        return client.Answer(
            scores=outputs["scores"],
            classes=[[name.decode() for name in row] for row in outputs["classes"]],
            version=self.version,
        )

    def close(self) -> None:
        pass


def open_target(
    server: str | None,
    model_path: str | None,
    model_name: str | None,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 60,
    token: bytes | None = None,
) -> Predictor:
    """A local model for `model_path`, else a client for `server` (checked reachable, and
    the version that answers resolved, before any image is read)."""
    if model_path is not None:
        if server is not None:
            raise InputError("give --server or --model-path, not both")
        if label is not None:
            raise InputError(f"--label {label} needs --server: a local --model-path has no labels")
        return LocalModel(model_path, model_name, version)
    if not model_name:
        raise InputError("--model-name is required with --server")
    remote = client.connect(server or DEFAULT_SERVER, model_name, version, label, timeout, token)
    try:
        remote.fetch_version()
    except BaseException:
        remote.close()
        raise
    return remote


# --- classifying ---


def success_row(uri: str, classes: list[str], scores, top_k: int) -> dict[str, Any]:
    top = [{"label": name, "score": score} for name, score in client.rank(classes, scores, top_k)]
    return {"path": uri, "top": top, "label": top[0]["label"], "score": top[0]["score"]}


def error_row(uri: str, error: str) -> dict[str, Any]:
    return {"path": uri, "top": [], "label": None, "score": None, "error": error}


def with_retries(predictor: Predictor, images: list[bytes]) -> client.Answer:
    """`predictor.predict`, retried with backoff while the server is unreachable or busy."""
    for attempt in range(RETRIES + 1):
        try:
            return predictor.predict(images)
        except client.Unavailable as error:
            if attempt == RETRIES:
                raise
            delay = RETRY_BACKOFF_S * 2**attempt
            logger.warning("retrying in %.1fs: %s", delay, error)
            time.sleep(delay)
    raise AssertionError("unreachable")


def classify(
    predictor: Predictor, uris: list[str], contents: list[bytes | str], top_k: int
) -> list[dict[str, Any]]:
    """One row per image, in order; an error row for a file that could not be read (`contents`
    holds why) or that the model refused. A refused batch is retried image by image, so that
    one bad file costs an error row, never its batch."""
    rows = [
        error_row(uri, content) if isinstance(content, str) else {}
        for uri, content in zip(uris, contents, strict=True)
    ]
    todo = [index for index, row in enumerate(rows) if not row]
    if not todo:
        return rows
    try:
        answer = with_retries(predictor, [contents[index] for index in todo])
    except client.RejectedInput as error:
        if len(todo) == 1:
            rows[todo[0]] = error_row(uris[todo[0]], error.reason)
            return rows
        logger.info("a batch of %d was refused; retrying its images one by one", len(todo))
        for index in todo:
            rows[index] = classify(predictor, [uris[index]], [contents[index]], top_k)[0]
        return rows
    if answer.version:
        predictor.version = answer.version
    for index, classes, scores in zip(todo, answer.classes, answer.scores, strict=True):
        rows[index] = success_row(uris[index], classes, scores, top_k)
    return rows


@dataclass
class Summary:
    images: int
    errors: int
    model_name: str
    version: int | None
    where: str
    output: str | None

    def line(self) -> str:
        images = f"{self.images:,} image{'' if self.images == 1 else 's'}"
        problems = f"{self.errors:,} error{'' if self.errors == 1 else 's'}"
        version = f" v{self.version}" if self.version else ""
        output = f" -> {self.output}" if self.output else ""
        return (
            f"predict: {images} ({problems}) classified by {self.model_name}{version} "
            f"at {self.where}{output}"
        )


def run(
    predictor: Predictor,
    refs: list[ImageRef],
    writer: "Writer",
    batch_size: int = 32,
    top_k: int = 3,
    progress: bool | None = None,
) -> Summary:
    """Classifies `refs` in batches of `batch_size` (the next batch is read while one is being
    classified: at most two in memory) and writes one row per image, in order."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (received {batch_size})")
    if top_k < 1:
        raise InputError(f"--top-k must be >= 1 (received {top_k})")
    batches = [refs[start : start + batch_size] for start in range(0, len(refs), batch_size)]
    done = failed = 0
    bar = tqdm(
        total=len(refs),
        unit="img",
        desc="predict",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="read") as reader, bar:
        pending = reader.submit(read_images, batches[0]) if batches else None
        for index, batch in enumerate(batches):
            contents = pending.result()
            if index + 1 < len(batches):
                pending = reader.submit(read_images, batches[index + 1])
            try:
                rows = classify(predictor, [ref.uri for ref in batch], contents, top_k)
            except client.ClientError as error:
                where = f"; the first {done:,} are in {writer.name}" if writer.name else ""
                raise client.ClientError(
                    f"stopped after {done:,} of {len(refs):,} images{where}: {error}"
                ) from None
            for row in rows:
                writer.write(row)
            writer.flush()
            done += len(rows)
            failed += sum("error" in row for row in rows)
            bar.update(len(rows))
    return Summary(
        done, failed, predictor.model_name, predictor.version, predictor.where, writer.name
    )


# --- writers ---


class Writer:
    """Rows to a stream; `name` is the output file, None for stdout."""

    def __init__(self, stream: TextIO, name: str | None):
        self.stream = stream
        self.name = name

    def write(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        self.stream.flush()


class JsonlWriter(Writer):
    def write(self, row: dict[str, Any]) -> None:
        self.stream.write(json.dumps(row) + "\n")


class CsvWriter(Writer):
    def __init__(self, stream: TextIO, name: str | None):
        super().__init__(stream, name)
        self.csv = csv.writer(stream, lineterminator="\n")
        self.csv.writerow(CSV_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        top_k = ";".join(f"{top['label']}:{top['score']:.6f}" for top in row["top"])
        score = "" if row["score"] is None else f"{row['score']:.6f}"
        self.csv.writerow([row["path"], row["label"] or "", score, top_k, row.get("error", "")])


class LineWriter(Writer):
    """`path: label score, label score, ...` per image, printed above any progress bar."""

    def write(self, row: dict[str, Any]) -> None:
        if "error" in row:
            line = f"{row['path']}: error: {row['error']}"
        else:
            top = ", ".join(f"{t['label']} {t['score']:.3f}" for t in row["top"])
            line = f"{row['path']}: {top}"
        tqdm.write(line, file=self.stream)


WRITERS: dict[str, type[Writer]] = {"jsonl": JsonlWriter, "csv": CsvWriter, "lines": LineWriter}


def output_format(output: str | None, format_name: str | None) -> str:
    """`format_name`, else the format of `output`'s suffix; lines when neither is given."""
    if format_name is not None:
        if format_name not in WRITERS:
            raise InputError(f"--format must be one of {sorted(WRITERS)} (received {format_name})")
        return format_name
    if output is None:
        return "lines"
    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"cannot tell the format of {output} from its suffix: name it .jsonl or .csv, "
            "or pass --format jsonl|csv"
        )
    return FORMATS[suffix]


@contextlib.contextmanager
def open_writer(output: str | None, format_name: str | None = None) -> Iterator[Writer]:
    """A writer of `output` (a file, replaced), or of stdout when `output` is None."""
    writer_class = WRITERS[output_format(output, format_name)]
    if output is None:
        yield writer_class(sys.stdout, None)
        return
    path = Path(output).expanduser()
    if path.parent and not path.parent.is_dir():
        raise InputError(f"--output {output}: folder {path.parent} does not exist")
    with path.open("w", encoding="utf-8", newline="") as stream:
        yield writer_class(stream, output)
