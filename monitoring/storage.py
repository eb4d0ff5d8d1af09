"""Where monitoring writes and reads: a local folder or a bucket (s3://, gs://, ...) through fsspec.

TensorFlow 2.21's file system has no s3://, and statistics and request logs are small files
written by the server, so they go through fsspec as the run mirror and the sources do.
Credentials and endpoints come from the environment (AWS_*, AWS_ENDPOINT_URL,
GOOGLE_APPLICATION_CREDENTIALS, ...).
"""

import fsspec


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of `url` (fsspec caches instances) and the path within it."""
    return fsspec.core.url_to_fs(url)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)


def write_file(url: str, data: bytes) -> None:
    """Writes `data` whole. Locally it is written aside and renamed, so a reader globbing the
    folder never sees half a file; an object store shows an object only once it is complete."""
    fs, path = filesystem(url)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    if not is_local(fs):
        fs.pipe_file(path, data)
        return
    fs.makedirs(folder, exist_ok=True)
    temporary = f"{folder}/.{name}.tmp"
    fs.pipe_file(temporary, data)
    fs.mv(temporary, path)
