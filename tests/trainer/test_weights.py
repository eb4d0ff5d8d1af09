"""trainer.weights: ImageNet weights arrive from Keras' origin or a mirror (here an HTTP server on
127.0.0.1 serving files the tests wrote), enter the cache only once they load, and fail fast and
in one line when they cannot be had."""

import functools
import http.server
import inspect
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src import applications as keras_applications
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

import cli
from configs import loader, schema
from trainer import models, weights

CLOSED_PORT = "http://127.0.0.1:1"  # nothing listens on port 1: the connection is refused
SMALL = (96, 96)  # the smallest resolution Keras has MobileNetV2 weights for


@dataclass
class Mirror:
    """A folder laid out like Keras' keras-applications/, served over HTTP."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    def path_of(self, backbone: str, image_size: tuple[int, int]) -> Path:
        return self.root / weights.keras_file(backbone, image_size).relative_path


@pytest.fixture(autouse=True)
def keras_cache(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache and no mirror from the developer's shell."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    return tmp_path / "keras" / "models"


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    served = Mirror(root, "")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            served.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    served.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def write_h5(path: Path, model: keras.Model) -> None:
    """A legacy no-top .h5 as Keras' own files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """(backbone, seed) -> (bytes of a weights file from a random backbone, its weights); each
    built once, as building takes a second."""
    folder = tmp_path_factory.mktemp("keras_files")

    @functools.cache
    def make(backbone: str, seed: int) -> tuple[bytes, list[np.ndarray]]:
        keras.utils.set_random_seed(seed)
        model = models.build_application(backbone, input_shape=(*SMALL, 3))
        write_h5(folder / f"{backbone}-{seed}.h5", model)
        return (folder / f"{backbone}-{seed}.h5").read_bytes(), model.get_weights()

    return make


def place(keras_files, path: Path, backbone: str, seed: int = 1) -> list[np.ndarray]:
    """Writes the (backbone, seed) file at `path`; returns its weights."""
    content, file_weights = keras_files(backbone, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return file_weights


def fetch(backbone: str, image_size=SMALL, mirror: str | None = None) -> Path:
    return Path(models.resolve_weights(backbone, "imagenet", image_size, mirror))


def model_config(*overrides: str) -> schema.ModelConfig:
    return loader.load(None, list(overrides)).model


def same_weights(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def cache_listing(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir()) if cache.exists() else []


# --- the table is Keras' own ---


def test_every_backbone_has_a_keras_weights_file():
    assert {*weights.FILES, "mobilenet_v2"} == set(schema.BACKBONES)


def keras_module(backbone: str):
    """The keras.src.applications module that loads `backbone`'s weights."""
    for prefix, module in [
        ("mobilenet_v3", "mobilenet_v3"),
        ("efficientnet_v2", "efficientnet_v2"),
        ("efficientnet_b", "efficientnet"),
        ("resnet", "resnet"),  # ResNetV2 loads through resnet.ResNet
        ("densenet", "densenet"),
        ("convnext", "convnext"),
    ]:
        if backbone.startswith(prefix):
            return getattr(keras_applications, module)
    return getattr(keras_applications, backbone)


@pytest.mark.parametrize("backbone", sorted(schema.BACKBONES))
def test_origin_and_hash_are_keras_constants(backbone):
    file = weights.keras_file(backbone, (224, 224))
    module = keras_module(backbone)
    bases = {
        value for name, value in vars(module).items() if name.isupper() and isinstance(value, str)
    }
    assert file.origin in bases or file.origin.removesuffix(file.name) in bases
    assert file.origin.endswith("/" + file.name)
    source = inspect.getsource(module)
    if file.file_hash is None:
        assert backbone == "mobilenet_v2" and "file_hash" not in source
    else:
        assert f'"{file.file_hash}"' in source
    if hasattr(module, "WEIGHTS_HASHES"):  # (with top, no top) pairs: ours is a no-top hash
        assert file.file_hash in {pair[1] for pair in module.WEIGHTS_HASHES.values()}


class RequestSeen(Exception):
    pass


# One backbone per Keras module (every naming rule), and MobileNetV2 at sizes in and out of
# Keras' list. The whole registry passes too but takes a minute of model building.
KERAS_REQUEST_CASES = [
    ("mobilenet_v2", (96, 96)),
    ("mobilenet_v2", (160, 160)),
    ("mobilenet_v2", (100, 100)),
    ("mobilenet_v2", (96, 128)),
    ("mobilenet_v3_large", (32, 32)),
    ("efficientnet_b0", (32, 32)),
    ("efficientnet_v2_b0", (32, 32)),
    ("resnet50", (32, 32)),
    ("resnet50_v2", (32, 32)),
    ("vgg19", (32, 32)),
    ("densenet121", (32, 32)),
    ("xception", (71, 71)),
    ("convnext_tiny", (32, 32)),
]


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
@pytest.mark.parametrize("backbone,image_size", KERAS_REQUEST_CASES)
def test_keras_own_imagenet_build_asks_for_our_file(backbone, image_size, monkeypatch):
    """What keras.applications passes to get_file with weights="imagenet" (the download itself
    is cut short: there is no network here)."""
    requested = []

    def record(fname, origin, **kwargs):
        requested.append((fname, origin, kwargs.get("file_hash")))
        raise RequestSeen

    monkeypatch.setattr(file_utils, "get_file", record)
    with pytest.raises(RequestSeen):
        models.build_application(backbone, weights="imagenet", input_shape=(*image_size, 3))
    file = weights.keras_file(backbone, image_size)
    assert requested == [(file.name, file.origin, file.file_hash)]


def test_mirror_paths_are_keras_paths_under_keras_applications():
    assert weights.keras_file("resnet50", SMALL).relative_path == (
        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    # Keras keeps EfficientNet B0-B7 at the root of another bucket's keras-applications/.
    assert weights.FILES["efficientnet_b0"].origin == (
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5"
    )
    assert weights.FILES["efficientnet_b0"].relative_path == "efficientnetb0_notop.h5"


# --- downloads ---


def test_the_env_mirror_downloads_into_the_cache_once(
    mirror, keras_cache, monkeypatch, keras_files
):
    place(keras_files, mirror.path_of("mobilenet_v2", SMALL), "mobilenet_v2")
    monkeypatch.setenv(weights.MIRROR_ENV, mirror.url + "/")
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert fetch("mobilenet_v2") == keras_cache / name
    assert mirror.requests == [f"/mobilenet_v2/{name}"]
    assert fetch("mobilenet_v2") == keras_cache / name
    assert len(mirror.requests) == 1
    assert cache_listing(keras_cache) == [name]  # no staging folder left behind


def test_a_model_gets_exactly_the_served_weights_and_the_config_key_beats_the_env(
    mirror, monkeypatch, keras_files
):
    served = place(keras_files, mirror.path_of("mobilenet_v2", SMALL), "mobilenet_v2")
    monkeypatch.setenv(weights.MIRROR_ENV, CLOSED_PORT)
    cfg = model_config(
        "model.backbone=mobilenet_v2",
        "model.weights=imagenet",
        f"model.weights_mirror={mirror.url}",
        "data.image_size=[96, 96]",
    )
    keras.utils.set_random_seed(2)
    built = models.build_model(cfg, (*SMALL, 3), 3).get_layer(models.BACKBONE).get_weights()
    assert len(mirror.requests) == 1
    assert same_weights(built, served)


def test_a_local_folder_mirror_works(mirror, keras_cache, keras_files):
    place(keras_files, mirror.path_of("mobilenet_v2", SMALL), "mobilenet_v2")
    assert fetch("mobilenet_v2", mirror=str(mirror.root)).parent == keras_cache


@pytest.mark.parametrize("damage", ["truncated", "html"])
def test_a_damaged_file_is_refused_and_leaves_the_cache_clean(
    damage, mirror, keras_cache, keras_files
):
    path = mirror.path_of("mobilenet_v2", SMALL)
    place(keras_files, path, "mobilenet_v2")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"<html>login</html>")
    with pytest.raises(weights.WeightsUnavailable) as raised:
        fetch("mobilenet_v2", mirror=mirror.url)
    message = str(raised.value)
    assert "\n" not in message
    assert f"{path.name} from {mirror.url}/mobilenet_v2/{path.name} does not load" in message
    assert "nothing was written to the Keras cache" in message
    assert cache_listing(keras_cache) == []
    path.write_bytes(good)
    assert fetch("mobilenet_v2", mirror=mirror.url).read_bytes() == good
    assert len(mirror.requests) == 2


def test_a_file_that_does_not_match_keras_hash_is_refused(mirror, keras_cache, keras_files):
    # A real, loadable MobileNetV3 file, but not Keras' bytes.
    place(keras_files, mirror.path_of("mobilenet_v3_small", SMALL), "mobilenet_v3_small")
    with pytest.raises(weights.WeightsUnavailable) as raised:
        fetch("mobilenet_v3_small", mirror=mirror.url)
    message = str(raised.value)
    assert "\n" not in message
    assert "does not match Keras' md5 hash d3e8ec802a04aa4fc771ee12a9a9b836" in message
    assert cache_listing(keras_cache) == []


# --- the right resolution ---


def test_mobilenet_v2_weights_follow_the_image_size(mirror, keras_cache, keras_files):
    """224's file in the cache is not 96's; sizes Keras has no file for use 224's, as Keras."""
    file_224 = weights.keras_file("mobilenet_v2", (224, 224))
    weights_224 = place(keras_files, keras_cache / file_224.name, "mobilenet_v2", seed=1)
    weights_96 = place(keras_files, mirror.path_of("mobilenet_v2", SMALL), "mobilenet_v2", seed=2)
    cfg = model_config(
        "model.backbone=mobilenet_v2",
        "model.weights=imagenet",
        f"model.weights_mirror={mirror.url}",
        "data.image_size=[96, 96]",
    )
    built = models.build_model(cfg, (*SMALL, 3), 3).get_layer(models.BACKBONE).get_weights()
    assert mirror.requests == [f"/{weights.keras_file('mobilenet_v2', SMALL).relative_path}"]
    assert same_weights(built, weights_96) and not same_weights(built, weights_224)
    for other_size in [(100, 100), (96, 128), (256, 256)]:
        assert fetch("mobilenet_v2", other_size, mirror.url) == keras_cache / file_224.name
    assert len(mirror.requests) == 1


# --- EfficientNet's ImageNet-only rescaling ---


@pytest.mark.slow
def test_efficientnet_with_imagenet_weights_computes_what_keras_own_build_computes(
    keras_cache, monkeypatch
):
    """Keras adds a Rescaling after EfficientNet's Normalization only for weights="imagenet";
    our weights=None build folds it into the variance."""
    file = weights.FILES["efficientnet_b0"]
    keras_cache.mkdir(parents=True)
    keras.utils.set_random_seed(1)
    saved = models.build_application("efficientnet_b0", input_shape=(32, 32, 3))
    [normalization] = [x for x in saved.layers if isinstance(x, keras.layers.Normalization)]
    normalization.set_weights(
        [np.array([0.485, 0.456, 0.406]), np.array([0.05, 0.05, 0.05]), np.array(0)]
    )
    write_h5(keras_cache / file.name, saved)

    # Keras' own imagenet model, its download replaced by the file (there is no network here).
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: keras_cache / file.name)
    keras_model = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(32, 32, 3)
    )
    cfg = model_config(
        "model.backbone=efficientnet_b0", "model.weights=imagenet", "data.image_size=[32, 32]"
    )
    ours = models.build_model(cfg, (32, 32, 3), 3).get_layer(models.BACKBONE)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    expected = np.asarray(keras_model(images * 255.0))
    scale = np.abs(expected).max()  # random deep weights give tiny features
    np.testing.assert_allclose(np.asarray(ours(images)), expected, atol=1e-3 * scale)
    unfolded = models.build_application("efficientnet_b0", input_shape=(32, 32, 3))
    unfolded.load_weights(keras_cache / file.name)
    assert np.abs(np.asarray(unfolded(images * 255.0)) - expected).max() > 0.1 * scale


# --- offline ---


@pytest.fixture
def stalled_server():
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("where", ["closed port", "stalled server", "non-routable address"])
def test_unreachable_weights_fail_in_seconds_with_one_line(
    where, stalled_server, keras_cache, monkeypatch
):
    monkeypatch.setattr(weights, "TIMEOUT_S", 1.0)
    url = {
        "closed port": CLOSED_PORT,
        "stalled server": stalled_server,
        "non-routable address": "http://10.255.255.1",
    }[where]
    monkeypatch.setenv(weights.MIRROR_ENV, url)
    name = weights.keras_file("mobilenet_v2", SMALL).name
    started = time.monotonic()
    with pytest.raises(weights.WeightsUnavailable) as raised:
        fetch("mobilenet_v2")
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message
    for part in [
        f"needs {name}, which could not be downloaded from {url}/mobilenet_v2/{name} (",
        "set IMGCLF_WEIGHTS_MIRROR or model.weights_mirror",
        "run `imgclf weights fetch mobilenet_v2 --image-size 96` where there is network",
        f"copy {name} into the Keras cache ({keras_cache})",
        "pass a file path as model.weights",
        "model.weights: null",
    ]:
        assert part in message
    if where == "stalled server":
        assert "timed out" in message
    assert cache_listing(keras_cache) == []


def test_a_bucket_mirror_is_refused_with_the_schemes_that_work():
    with pytest.raises(weights.WeightsUnavailable, match="use http://, https://, file://"):
        fetch("mobilenet_v2", mirror="s3://bucket/keras-applications")


# --- imgclf weights fetch ---


def test_imgclf_weights_fetch_downloads_and_names_the_file(
    mirror, keras_cache, capsys, keras_files
):
    place(keras_files, mirror.path_of("mobilenet_v2", SMALL), "mobilenet_v2")
    argv = ["weights", "fetch", "mobilenet_v2", "--image-size", "96", "--mirror", mirror.url]
    assert cli.main(argv) == 0
    cached = keras_cache / weights.keras_file("mobilenet_v2", SMALL).name
    assert cached.is_file()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"weights fetch: mobilenet_v2 ImageNet weights {cached.name} in {keras_cache}"


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["cnn"], "unknown backbone 'cnn'; accepted: mobilenet_v2, "),
        (["xception", "--image-size", "32"], "xception needs --image-size 71 or more"),
        (["mobilenet_v2", "--mirror", CLOSED_PORT], "could not be downloaded"),
    ],
    ids=["unknown backbone", "too small", "unreachable"],
)
def test_imgclf_weights_fetch_errors_are_one_line_and_exit_2(argv, expected, capsys):
    assert cli.main(["weights", "fetch", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    if argv == ["cnn"]:
        assert all(name in err for name in schema.BACKBONE_NAMES)
