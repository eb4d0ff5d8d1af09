"""Which settings and arguments may name a bucket (s3://, gs://, ...) and which need a local folder.

Buckets work where imgclf reads or writes through fsspec (sources, run folders, monitoring) and,
for gs:// only, where TensorFlow's own file system does (TFRecords: TF 2.21 has no s3://). The
registry locks its store with flock and the pipeline's metadata is SQLite: both need a local (or
mounted) folder, and a URL there once became a local folder named `s3:`.
"""

# Where tf.io.gfile reads and writes in TF 2.21 (tensorflow-io, which added s3://, is gone).
TF_SCHEMES = ("gs",)


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
