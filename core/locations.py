"""Which settings and arguments may name a bucket (s3://, gs://, ...) and which need a local folder.

Buckets work where imgclf reads or writes through fsspec (sources, run folders, dataset versions,
monitoring): TensorFlow 2.21's file system has no s3://, and its gs:// cannot be pointed at
another endpoint (an emulator, a proxy). The registry locks its store with flock and the
pipeline's metadata is SQLite: both need a local (or mounted) folder, and a URL there once became
a local folder named `s3:`. A location that may be a URL never goes through pathlib nor
os.path.abspath/normpath, which turn `gs://b/x` into `gs:/b/x`.
"""

import os

# Where data.output_dir may be: buckets that imgclf reads and writes through fsspec.
BUCKET_SCHEMES = ("s3", "gs")


def scheme_of(path: str) -> str | None:
    """'s3' for s3://bucket/key; None for a local path or file://."""
    text = str(path)
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    return None if scheme == "file" else scheme


def is_url(path: str) -> bool:
    return scheme_of(path) is not None


def without_file_scheme(path: str) -> str:
    """file:///srv/x as /srv/x: settings used as local paths would make a folder named `file:`."""
    text = str(path)
    return text[len("file://") :] if text.lower().startswith("file://") else text


def absolute(location: str) -> str:
    """A local path made absolute; a URL as it is (os.path.abspath would make it `/cwd/gs:/b`)."""
    return str(location) if is_url(location) else os.path.abspath(location)
