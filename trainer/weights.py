"""Where each keras.applications backbone's no-top ImageNet weights come from, and fetching them.

Origins, file names and hashes are Keras' own: read from its application modules where it keeps
them as constants (BASE_WEIGHTS_PATH, WEIGHTS_HASHES, WEIGHTS_PATH_NO_TOP), copied only where it
writes them inline in a function (VGG, DenseNet and Xception hashes). A mirror stands for Keras'
`keras-applications/` folder: a file is at <mirror>/<the part of Keras' URL after
`keras-applications/`>, e.g. <mirror>/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5.

A download goes through keras.utils.get_file (progress bar, Keras' hash where it has one) into a
staging folder beside the cache and moves into <KERAS_HOME or ~/.keras>/models only after the file
has loaded into the backbone: Keras itself leaves a file that failed its hash in the cache, and an
unhashed truncated file would be reused forever.
"""

import contextlib
import os
import socket
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras.src.applications import (
    convnext,
    densenet,
    efficientnet,
    efficientnet_v2,
    mobilenet_v2,
    mobilenet_v3,
    resnet,
    vgg16,
    vgg19,
    xception,
)

from configs import loader

KERAS_FOLDER = "keras-applications/"
MIRROR_ENV = "IMGCLF_WEIGHTS_MIRROR"
MIRROR_SCHEMES = ("http", "https", "file")
# Seconds a connection or a read may stall: offline fails in seconds, not at the OS's TCP timeout.
# Name resolution is not covered (getaddrinfo ignores socket timeouts).
TIMEOUT_S = 10.0
# The resolutions Keras has MobileNetV2 weights for; any other (or a non-square) size gets 224's,
# as keras.applications.MobileNetV2 itself picks.
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
# Keras' EfficientNet B0-B7 add a Rescaling by 1/sqrt(ImageNet stddev) after their Normalization
# only when built with weights="imagenet"; a backbone built with weights=None gets it folded into
# the Normalization's variance instead (the same numbers, see fold_imagenet_rescaling).
IMAGENET_RESCALED = tuple(f"efficientnet_b{n}" for n in range(8))


@dataclass(frozen=True)
class WeightsFile:
    """One no-top ImageNet weights file as Keras names, places and hashes it."""

    name: str  # the file name in the Keras cache
    origin: str  # Keras' own URL
    file_hash: str | None  # md5 (32 hex digits) or sha256 (64) as keras.utils.get_file takes it

    @property
    def relative_path(self) -> str:
        """The path under Keras' keras-applications/ folder, which a mirror reproduces."""
        return self.origin.rsplit(KERAS_FOLDER, 1)[1]


def from_module_constants(base: str, hashes: dict, weights_name: str, name: str) -> WeightsFile:
    # WEIGHTS_HASHES values are (with top, no top).
    return WeightsFile(name, base + name, hashes[weights_name][1])


def from_origin(origin: str, file_hash: str) -> WeightsFile:
    return WeightsFile(origin.rsplit("/", 1)[1], origin, file_hash)


def mobilenet_v3_file(model_type: str) -> WeightsFile:
    weights_name = f"{model_type}_224_1.0_float"  # Keras has 224 weights only
    return from_module_constants(
        mobilenet_v3.BASE_WEIGHT_PATH,
        mobilenet_v3.WEIGHTS_HASHES,
        weights_name,
        f"weights_mobilenet_v3_{weights_name}_no_top_v2.h5",
    )


def resnet_file(weights_name: str) -> WeightsFile:
    # ResNetV2 loads through resnet.ResNet, with resnet's base URL and hash table.
    return from_module_constants(
        resnet.BASE_WEIGHTS_PATH,
        resnet.WEIGHTS_HASHES,
        weights_name,
        f"{weights_name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


# Keyed like configs.schema.BACKBONES; mobilenet_v2's file depends on the image size
# (mobilenet_v2_file). The hashes written out here are inline literals in Keras' functions.
FILES = {
    "mobilenet_v3_small": mobilenet_v3_file("small"),
    "mobilenet_v3_large": mobilenet_v3_file("large"),
    **{
        f"efficientnet_b{n}": from_module_constants(
            efficientnet.BASE_WEIGHTS_PATH,
            efficientnet.WEIGHTS_HASHES,
            f"b{n}",
            f"efficientnetb{n}_notop.h5",
        )
        for n in range(8)
    },
    **{
        f"efficientnet_v2_{size}": from_module_constants(
            efficientnet_v2.BASE_WEIGHTS_PATH,
            efficientnet_v2.WEIGHTS_HASHES,
            size if size.startswith("b") else f"-{size}",
            f"efficientnetv2-{size}_notop.h5",
        )
        for size in ("b0", "b1", "b2", "b3", "s")
    },
    **{f"resnet{depth}": resnet_file(f"resnet{depth}") for depth in (50, 101, 152)},
    **{f"resnet{depth}_v2": resnet_file(f"resnet{depth}v2") for depth in (50, 101, 152)},
    "vgg16": from_origin(vgg16.WEIGHTS_PATH_NO_TOP, "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": from_origin(vgg19.WEIGHTS_PATH_NO_TOP, "253f8cb515780f3b799900260a226db6"),
    "densenet121": from_origin(
        densenet.DENSENET121_WEIGHT_PATH_NO_TOP, "30ee3e1110167f948a6b9946edeeb738"
    ),
    "xception": from_origin(xception.WEIGHTS_PATH_NO_TOP, "b0042744bf5b25fce3cb969f33bebb97"),
    "convnext_tiny": from_module_constants(
        convnext.BASE_WEIGHTS_PATH,
        convnext.WEIGHTS_HASHES,
        "convnext_tiny",
        "convnext_tiny_notop.h5",
    ),
}


def mobilenet_v2_rows(image_size: tuple[int, int]) -> int:
    """The resolution keras.applications.MobileNetV2 loads weights for at this input size."""
    rows, cols = image_size
    return rows if rows == cols and rows in MOBILENET_V2_SIZES else 224


def mobilenet_v2_file(image_size: tuple[int, int]) -> WeightsFile:
    # Keras downloads MobileNetV2 without a hash.
    name = (
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{mobilenet_v2_rows(image_size)}"
        "_no_top.h5"
    )
    return WeightsFile(name, mobilenet_v2.BASE_WEIGHT_PATH + name, None)


def keras_file(backbone: str, image_size: tuple[int, int]) -> WeightsFile:
    """The file keras.applications loads for `backbone` with include_top=False at this size."""
    if backbone == "mobilenet_v2":
        return mobilenet_v2_file(image_size)
    return FILES[backbone]


def cache_dir() -> Path:
    """<KERAS_HOME or ~/.keras>/models, where Keras keeps application weights."""
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME") or "~/.keras")) / "models"


def mirror_url(mirror: str | None) -> str | None:
    """The mirror in effect: `mirror` (model.weights_mirror), else $IMGCLF_WEIGHTS_MIRROR, else
    None (Keras' origin). A local folder becomes a file:// URL."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return None
    scheme = urllib.parse.urlsplit(mirror).scheme
    if not scheme:
        return Path(mirror).absolute().as_uri()
    if scheme.lower() not in MIRROR_SCHEMES:
        raise WeightsUnavailable(
            f"model.weights_mirror / {MIRROR_ENV}: {mirror} is not a URL imagenet weights can "
            "download from; use http://, https://, file:// or a local folder"
        )
    return mirror


def source_url(file: WeightsFile, mirror: str | None) -> str:
    return file.origin if mirror is None else f"{mirror.rstrip('/')}/{file.relative_path}"


class WeightsUnavailable(loader.ConfigError):
    """The ImageNet weights file cannot be had: unreachable, damaged, or not Keras' file."""


class UnloadableWeights(loader.ConfigError):
    """A weights file that does not load into the backbone; `reason` says why."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def fetch(
    backbone: str,
    image_size: tuple[int, int],
    build_backbone: Callable[[], keras.Model],
    mirror: str | None = None,
) -> Path:
    """The cached no-top ImageNet file for `backbone`, downloaded first when it is missing.

    `build_backbone` builds the bare backbone with weights=None: a download enters the cache only
    after it has loaded into one. `mirror` is model.weights_mirror (see mirror_url).
    """
    file = keras_file(backbone, image_size)
    cached = cache_dir() / file.name
    if cached.is_file():
        return cached
    url = source_url(file, mirror_url(mirror))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(prefix=".download-", dir=cached.parent)
    except OSError as error:
        raise WeightsUnavailable(
            f"model.weights: imagenet: cannot write to the Keras cache {cached.parent} "
            f"({error.strerror}); set KERAS_HOME to a writable folder"
        ) from None
    with staging:
        staged = download(file, url, Path(staging.name), backbone, image_size)
        try:
            load(build_backbone(), backbone, staged)
        except UnloadableWeights as error:
            raise WeightsUnavailable(
                f"model.weights: imagenet for {backbone}: {file.name} from {url} does not load "
                f"into {backbone} ({error.reason}); nothing was written to the Keras cache "
                f"({cached.parent}); replace the file at its source, or use model.weights: null"
            ) from None
        os.replace(staged, cached)
    return cached


def download(
    file: WeightsFile, url: str, folder: Path, backbone: str, image_size: tuple[int, int]
) -> Path:
    """`url` as folder/<file.name> through keras.utils.get_file, checked against Keras' hash."""
    try:
        with socket_timeout(TIMEOUT_S):
            return Path(
                keras.utils.get_file(
                    file.name, url, file_hash=file.file_hash, cache_dir=folder, cache_subdir="."
                )
            )
    except Exception as error:  # get_file raises a bare Exception for URL failures
        if isinstance(error, ValueError) and file.file_hash and "hash" in str(error):
            algorithm = "sha256" if len(file.file_hash) == 64 else "md5"
            raise WeightsUnavailable(
                f"model.weights: imagenet for {backbone}: {file.name} from {url} does not match "
                f"Keras' {algorithm} hash {file.file_hash} (a damaged or different file); "
                f"nothing was written to the Keras cache ({cache_dir()}); replace the file at "
                "its source, or use model.weights: null"
            ) from None
        raise WeightsUnavailable(
            f"model.weights: imagenet for {backbone} needs {file.name}, which could not be "
            f"downloaded from {url} ({fetch_failure(error, url)}); ways out: set {MIRROR_ENV} "
            "or model.weights_mirror to a copy of Keras' keras-applications/ folder, run "
            f"`imgclf weights fetch {backbone}{size_option(backbone, image_size)}` where there "
            f"is network, copy {file.name} into the Keras cache ({cache_dir()}), pass a file "
            "path as model.weights, or use model.weights: null to train from scratch"
        ) from None


def size_option(backbone: str, image_size: tuple[int, int]) -> str:
    if backbone != "mobilenet_v2":
        return ""
    return f" --image-size {mobilenet_v2_rows(image_size)}"


def fetch_failure(error: Exception, url: str) -> str:
    """get_file's 'URL fetch failure on <url>: <code> -- <reason>' as '<code> <reason>'."""
    text = first_line(error).removeprefix(f"URL fetch failure on {url}: ")
    return text.removeprefix("None -- ").replace(" -- ", " ") or type(error).__name__


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


@contextlib.contextmanager
def socket_timeout(seconds: float):
    """urllib's urlretrieve (under get_file) takes no timeout: the socket default bounds it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load(model: keras.Model, backbone: str, path: str | os.PathLike) -> None:
    """Loads Keras' no-top file into `model`, built with weights=None, so that it computes what
    keras.applications' weights="imagenet" build computes."""
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        reason = first_line(error)
        raise UnloadableWeights(
            f"model.weights: imagenet: {path} does not load into {backbone} ({reason}); delete "
            "it so that it is downloaded again, or use model.weights: null",
            reason,
        ) from None
    if backbone in IMAGENET_RESCALED:
        fold_imagenet_rescaling(model)


def fold_imagenet_rescaling(model: keras.Model) -> None:
    """Keras' EfficientNet computes (x - mean) / sqrt(variance) * 1 / sqrt(stddev) with ImageNet
    weights; (x - mean) / sqrt(variance * stddev) is the same without the extra layer."""
    [normalization] = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)
    ]
    stddev = np.asarray(efficientnet.IMAGENET_STDDEV_RGB, np.float32)
    normalization.adapt_variance.assign(np.asarray(normalization.adapt_variance) * stddev)
    normalization.finalize_state()  # Normalization caches mean and variance as tensors
