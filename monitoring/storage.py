"""Where monitoring writes and reads: a local folder or a bucket (s3://, gs://, ...) through fsspec.

TensorFlow 2.21's file system has no s3://, and statistics and request logs are small files
written by the server, so they go through fsspec as the run mirror and the sources do.
Credentials and endpoints come from the environment (AWS_*, AWS_ENDPOINT_URL,
GOOGLE_APPLICATION_CREDENTIALS, ...).
"""

import os

import fsspec

from core import locations


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of `url` (fsspec caches instances) and the path within it."""
    return fsspec.core.url_to_fs(url)


def write_file(url: str, data: bytes) -> None:
    """Writes `data` whole. Locally it is written aside and renamed, so a reader globbing the
    folder never sees half a file; an object store shows an object only once it is complete."""
    fs, path = filesystem(url)
    if locations.is_url(url):
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path)
    fs.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    fs.pipe_file(temporary, data)
    fs.mv(temporary, path)
