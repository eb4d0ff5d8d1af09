"""deploy/k8s: `imgclf serve` Deployment + Service + HPA (deploy/k8s-tf-serving swaps in TF
Serving), two-worker training Jobs with TF_CONFIG, and a distributed KerasTuner search (a chief
Job + Service, an Indexed Job of workers). Rendered with `kubectl kustomize` and validated
against Kubernetes' own JSON schemas (kubernetes-validate, offline) where those are installed."""

import argparse
import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

import cli
from configs import loader, schema
from registry import store
from serving.server import metrics
from tests.deploy import dockerfile, serving_protos

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
TF_SERVING_OVERLAY = REPO / "deploy" / "k8s-tf-serving"
SERVING_DIR = REPO / "deploy" / "serving"
STATUS_URL = re.compile(r"/v1/models/(?P<model>[^/]+)")  # TF Serving's model status
WORKERS = 2


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None]


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    [found] = [
        d for d in docs if d["kind"] == kind and name in (None, d.get("metadata", {}).get("name"))
    ]
    return found


def manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in documents(path.name)]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    numbers = {p["name"]: p["containerPort"] for p in container["ports"]}
    if isinstance(port, str):
        assert port in numbers, f"port {port!r} names no port of {container['name']}"
        return numbers[port]
    assert port in numbers.values(), f"port {port} is not a port of {container['name']}"
    return port


def test_every_manifest_parses_and_kustomization_lists_them():
    kinds = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path.name):
            assert {"apiVersion", "kind"} <= set(doc), f"{path.name}: {doc}"
            kinds.setdefault(path.name, []).append(doc["kind"])
            if doc["kind"] != "Kustomization":
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert kinds == {
        "kustomization.yaml": ["Kustomization"],
        "serving.yaml": ["Deployment", "Service", "HorizontalPodAutoscaler"],
        "storage.yaml": ["PersistentVolumeClaim"] * 3,
        "training.yaml": ["ConfigMap", "Service", "Job", "Job"],
        "tuning.yaml": ["ConfigMap", "Service", "Job", "Job"],
    }
    resources = only(documents("kustomization.yaml"), "Kustomization")["resources"]
    assert sorted(resources) == sorted(k for k in kinds if k != "kustomization.yaml")


def kustomize(folder: Path) -> list[dict]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed"
)


@needs_kubectl
def test_kubectl_kustomize_builds_everything():
    built = kustomize(K8S)
    assert len(built) == len([d for d in manifests() if d["kind"] != "Kustomization"])


@needs_kubectl
@pytest.mark.skipif(
    importlib.util.find_spec("kubernetes_validate") is None,
    reason="kubernetes-validate (Kubernetes' JSON schemas, offline) is not installed",
)
@pytest.mark.parametrize("folder", [K8S, TF_SERVING_OVERLAY], ids=["imgclf-serve", "tf-serving"])
def test_every_object_is_valid_for_kubernetes(folder):
    import kubernetes_validate

    for doc in kustomize(folder):
        # Strict: a misspelt or misplaced field is an error, not silently dropped by the API.
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_volumes_name_claims_that_exist():
    claims = {d["metadata"]["name"] for d in documents("storage.yaml")}
    configmaps = {d["metadata"]["name"] for d in manifests() if d["kind"] == "ConfigMap"}
    for doc in manifests():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
                else:
                    assert volume["configMap"]["name"] in configmaps


# --- serving ----------------------------------------------------------------------------------


def serving_container(docs: list[dict] | None = None) -> dict:
    deployment = only(documents("serving.yaml") if docs is None else docs, "Deployment")
    [container] = pod_spec(deployment)["containers"]
    return container


def served_args(container: dict) -> argparse.Namespace:
    """`imgclf serve` as the pod runs it: the serve image's entrypoint, then the pod's args."""
    final = dockerfile.chain(dockerfile.read(REPO / "Dockerfile"), "serve")[-1]
    [entrypoint] = final.of("ENTRYPOINT")
    return cli.build_parser().parse_args(entrypoint.args[1:] + container["args"])


def served_ports(args: argparse.Namespace) -> dict[str, int]:
    defaults = schema.ServingConfig()
    return {"rest": args.port or defaults.port, "grpc": args.grpc_port or defaults.grpc_port}


def tf_serving_flags() -> dict[str, str]:
    [entrypoint] = [
        i for i in dockerfile.read(SERVING_DIR / "Dockerfile") if i.keyword == "ENTRYPOINT"
    ]
    return dict(arg[2:].partition("=")[::2] for arg in entrypoint.args[1:])


def check_probes(container: dict, rest_port: int) -> None:
    """Every probe asks the server for one model's status on the REST port."""
    models = set()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        match = STATUS_URL.fullmatch(get["path"])
        assert match, f"{probe} path {get['path']} is not the model status /v1/models/<model>"
        models.add(store.check_model_name(match["model"]))
        assert container_port(container, get["port"]) == rest_port
    assert len(models) == 1  # every probe watches the same model
    assert (
        container["readinessProbe"]["periodSeconds"] <= container["livenessProbe"]["periodSeconds"]
    )


def test_serving_runs_imgclf_serve_on_the_mounted_registry():
    container = serving_container()
    assert container["image"].split(":")[0] == "imgclf-serve"
    args = served_args(container)
    assert args.handler.__module__ == "cli.serve"
    assert args.host == "0.0.0.0"
    # What `imgclf registry serving-config --root /models` writes into the volume.
    config_dir = str(Path(args.model_config_file).parent)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    assert mount["readOnly"] is True
    spec = pod_spec(only(documents("serving.yaml"), "Deployment"))
    stages = dockerfile.chain(dockerfile.read(REPO / "Dockerfile"), "serve")
    [*_, user] = [i.args[0] for stage in stages for i in stage.of("USER")]
    assert str(spec["securityContext"]["runAsUser"]) == user.split(":")[0]


def test_serving_probes_ask_for_the_model_status():
    container = serving_container()
    check_probes(container, served_ports(served_args(container))["rest"])
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)


def test_serving_ports_match_between_server_deployment_and_service():
    docs = documents("serving.yaml")
    deployment, service = only(docs, "Deployment"), only(docs, "Service")
    container = serving_container(docs)
    ports = served_ports(served_args(container))
    assert {p["containerPort"] for p in container["ports"]} == set(ports.values())
    for port in service["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == port["port"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_autoscaler_scales_the_serving_deployment_on_cpu():
    docs = documents("serving.yaml")
    deployment, autoscaler = only(docs, "Deployment"), only(docs, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Utilization is a share of the request: without a CPU request the HPA cannot scale.
    assert "cpu" in serving_container(docs)["resources"]["requests"]
    assert 2 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]


def test_prometheus_annotations_name_the_servers_metrics():
    deployment = only(documents("serving.yaml"), "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == metrics.METRICS_PATH
    rest_port = served_ports(served_args(serving_container()))["rest"]
    assert annotations["prometheus.io/port"] == str(rest_port)
    # The TF Serving overlay keeps the annotations: its monitoring.config exports the same path.
    monitoring = text_format.Parse(
        (SERVING_DIR / "monitoring.config").read_text(), serving_protos.MonitoringConfig()
    )
    assert monitoring.prometheus_config.path == metrics.METRICS_PATH


@needs_kubectl
def test_the_tf_serving_overlay_swaps_the_server_and_keeps_the_rest():
    base, overlay = kustomize(K8S), kustomize(TF_SERVING_OVERLAY)
    container = serving_container(overlay)
    assert container["image"].split(":")[0] == "imgclf-tf-serving"
    assert "args" not in container  # the TF Serving image's entrypoint holds its flags
    flags = tf_serving_flags()
    assert {p["containerPort"] for p in container["ports"]} == {
        int(flags["port"]),
        int(flags["rest_api_port"]),
    }
    check_probes(container, int(flags["rest_api_port"]))  # TF Serving has the same status URL
    config_dir = str(Path(flags["model_config_file"]).parent)
    assert [m["mountPath"] for m in container["volumeMounts"]] == [config_dir]
    # Nothing else differs from the base.
    base_container = serving_container(base)
    for changed in ("image", "args"):
        base_container.pop(changed), container.pop(changed, None)
    assert base_container == container
    assert [d for d in base if d["kind"] != "Deployment"] == [
        d for d in overlay if d["kind"] != "Deployment"
    ]


# --- multi-worker training --------------------------------------------------------------------


def worker_jobs() -> list[dict]:
    return [d for d in documents("training.yaml") if d["kind"] == "Job"]


def tf_config(job: dict) -> dict:
    [container] = pod_spec(job)["containers"]
    [value] = [e["value"] for e in container["env"] if e["name"] == "TF_CONFIG"]
    return json.loads(value)


def test_each_worker_job_has_a_valid_tf_config():
    jobs = worker_jobs()
    assert len(jobs) == WORKERS
    configs = [tf_config(job) for job in jobs]
    clusters = [config["cluster"] for config in configs]
    assert all(cluster == clusters[0] for cluster in clusters), "workers disagree on the cluster"
    assert list(clusters[0]) == ["worker"] and len(clusters[0]["worker"]) == WORKERS
    assert len(set(clusters[0]["worker"])) == WORKERS
    tasks = [config["task"] for config in configs]
    assert all(task["type"] == "worker" for task in tasks)
    assert sorted(task["index"] for task in tasks) == list(range(WORKERS))


def test_worker_addresses_resolve_through_the_headless_service():
    docs = documents("training.yaml")
    service = only(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    for job in worker_jobs():
        spec = pod_spec(job)
        config = tf_config(job)
        address = config["cluster"]["worker"][config["task"]["index"]]
        host, _, port = address.rpartition(":")
        # A pod with hostname H and subdomain S (a headless Service) resolves as H.S.
        assert host == f"{spec['hostname']}.{spec['subdomain']}"
        assert spec["subdomain"] == service["metadata"]["name"]
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        [container] = spec["containers"]
        assert int(port) in service_ports
        assert container_port(container, int(port)) == int(port)


def test_worker_jobs_differ_only_in_name_host_and_index():
    def normalised(job: dict) -> dict:
        job = copy.deepcopy(job)
        job["metadata"]["name"] = "JOB"
        spec = pod_spec(job)
        spec["hostname"] = "HOST"
        [container] = spec["containers"]
        container["env"] = [e for e in container["env"] if e["name"] != "TF_CONFIG"]
        return job

    first, *others = (normalised(job) for job in worker_jobs())
    assert all(other == first for other in others)


def test_trainer_reads_the_cluster_from_tf_config(monkeypatch):
    from trainer import distribute

    for job in worker_jobs():
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config(job)))
        assert distribute.tf_config_workers() == WORKERS  # so `auto` would pick multi_worker too


def test_workers_train_one_shared_run_from_a_valid_config(tmp_path):
    docs = documents("training.yaml")
    for job in worker_jobs():
        spec = pod_spec(job)
        [container] = spec["containers"]
        args = container["args"]
        assert args[0] == "train"
        config_path = Path(args[args.index("--config") + 1])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_volume = volumes[mounts[str(config_path.parent)]["name"]]
        configmap = only(docs, "ConfigMap", config_volume["configMap"]["name"])
        (tmp_path / config_path.name).write_text(configmap["data"][config_path.name])
        cfg = loader.load(tmp_path / config_path.name)  # the real schema validates it
        assert cfg.train.distribution in ("multi_worker", "auto")
        assert cfg.train.run_id, "workers need one train.run_id to share a run folder"
        for folder in (cfg.train.runs_dir, cfg.data.output_dir):
            assert any(Path(folder).is_relative_to(m) for m in mounts), f"{folder} not mounted"
        runs_mount = next(
            m for m in mounts.values() if Path(cfg.train.runs_dir) == Path(m["mountPath"])
        )
        assert not runs_mount.get("readOnly"), "the chief writes the run"
        assert container["image"].split(":")[0] == "imgclf"
        assert spec["securityContext"]["runAsUser"] == 1000  # the training image's user


# --- distributed tuning -----------------------------------------------------------------------

# The downward-API field an Indexed Job fills with each pod's completion index.
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
ENV_REFERENCE = re.compile(r"\$\((\w+)\)")


def environment(container: dict, index: int | None) -> dict[str, str]:
    """The container's environment as Kubernetes sets it in the pod with completion `index`:
    the completion-index field filled in, and $(NAME) expanded only from names defined above it
    (an unknown or later name stays as written, as in Kubernetes)."""
    env = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            field = var["valueFrom"].get("fieldRef", {}).get("fieldPath")
            assert field == COMPLETION_INDEX and index is not None, (
                f"{var['name']}: only an Indexed Job's completion index is resolved here "
                f"(received {var['valueFrom']})"
            )
            env[var["name"]] = str(index)
        else:
            value = var.get("value", "")
            env[var["name"]] = ENV_REFERENCE.sub(lambda m: env.get(m[1], m[0]), value)
    if index is not None:
        env.setdefault("JOB_COMPLETION_INDEX", str(index))  # Kubernetes appends it last
    return env


def pod_environments(job: dict) -> list[dict[str, str]]:
    """The environment of each of the Job's pods (one per completion)."""
    [container] = pod_spec(job)["containers"]
    indexed = job["spec"].get("completionMode") == "Indexed"
    completions = job["spec"].get("completions", 1)
    return [environment(container, i if indexed else None) for i in range(completions)]


def tuning_jobs() -> tuple[dict, dict]:
    """(the chief's Job, the workers' Job): KerasTuner's chief is the tuner id with 'chief'."""
    jobs = [d for d in documents("tuning.yaml") if d["kind"] == "Job"]
    chiefs = [
        job
        for job in jobs
        if any("chief" in env.get("KERASTUNER_TUNER_ID", "") for env in pod_environments(job))
    ]
    names = [job["metadata"]["name"] for job in chiefs]
    assert len(jobs) == 2 and len(chiefs) == 1, (
        f"expected a chief Job and a workers' Job (received {len(jobs)} Jobs, chiefs {names})"
    )
    [workers] = [job for job in jobs if job is not chiefs[0]]
    return chiefs[0], workers


def test_tuner_ids_are_unique_and_only_the_chief_serves_the_oracle():
    chief, workers = tuning_jobs()
    assert len(pod_environments(chief)) == 1
    ids = [env["KERASTUNER_TUNER_ID"] for job in (chief, workers) for env in pod_environments(job)]
    assert not [i for i in ids if "$(" in i], f"unexpanded tuner ids: {ids}"
    # The oracle gives a tuner id its unfinished trial again: two pods with one id would run
    # the same trial. Every id with 'chief' in it would start an oracle of its own.
    assert len(set(ids)) == len(ids), f"tuner ids repeat: {ids}"
    assert ["chief" in i for i in ids] == [True] + [False] * (len(ids) - 1), ids
    assert len(ids) - 1 >= 2, "a distributed search wants two workers or more"
    # A worker pod waiting for parallelism would start only when the search is over.
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"]


def test_the_oracle_port_is_the_same_for_the_chief_the_service_and_the_workers():
    chief, workers = tuning_jobs()
    service = only(documents("tuning.yaml"), "Service")
    [container] = pod_spec(chief)["containers"]
    [chief_env] = pod_environments(chief)
    port = int(chief_env["KERASTUNER_ORACLE_PORT"])
    # The oracle binds KERASTUNER_ORACLE_IP: 127.0.0.1 or a pod name would shut other pods out.
    assert chief_env["KERASTUNER_ORACLE_IP"] == "0.0.0.0"
    [service_port] = service["spec"]["ports"]
    target = container_port(container, service_port.get("targetPort", service_port["port"]))
    assert target == port, f"the Service sends to {target}, the oracle listens on {port}"
    if "readinessProbe" in container:
        assert container_port(container, container["readinessProbe"]["tcpSocket"]["port"]) == port
    for env in pod_environments(workers):
        asked = int(env["KERASTUNER_ORACLE_PORT"])
        assert asked == service_port["port"], (
            f"a worker asks port {asked}, the Service has {service_port['port']}"
        )


def test_workers_reach_the_oracle_by_the_services_dns_name():
    chief, workers = tuning_jobs()
    service = only(documents("tuning.yaml"), "Service")
    name = service["metadata"]["name"]
    for env in pod_environments(workers):
        address = env["KERASTUNER_ORACLE_IP"]
        # The short name in the same namespace, or <name>.<namespace>.svc...
        assert address == name or address.startswith(f"{name}."), (address, name)
    selector = service["spec"]["selector"].items()
    assert selector <= chief["spec"]["template"]["metadata"]["labels"].items()
    # Only the chief serves the oracle: a worker behind the Service would refuse connections.
    assert not selector <= workers["spec"]["template"]["metadata"]["labels"].items()


def test_chief_and_workers_run_one_search_from_a_valid_tuning_config(tmp_path):
    docs = documents("tuning.yaml")
    chief, workers = tuning_jobs()
    seen = []
    for job in (chief, workers):
        spec = pod_spec(job)
        [container] = spec["containers"]
        args = container["args"]
        assert args[:2] == ["tune", "--config"], args
        # A restarted chief with --overwrite would delete the search it is resuming.
        assert "--overwrite" not in args
        config_path = Path(args[2])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_volume = volumes[mounts[str(config_path.parent)]["name"]]
        configmap = only(docs, "ConfigMap", config_volume["configMap"]["name"])
        text = configmap["data"][config_path.name]
        assert "tuning" in yaml.safe_load(text)
        written = tmp_path / job["metadata"]["name"] / config_path.name
        written.parent.mkdir()
        written.write_text(text)
        cfg = loader.load(written)  # the real schema validates it
        assert cfg.tuning.space, "the tuning section searches nothing"
        # Trial runs, the search state and best.yaml are shared: all on the writable runs volume.
        for folder in (cfg.train.runs_dir, cfg.tuning.directory or cfg.train.runs_dir):
            [mount] = [m for m in mounts.values() if Path(folder).is_relative_to(m["mountPath"])]
            assert not mount.get("readOnly"), f"{folder} is read-only"
        assert any(Path(cfg.data.output_dir).is_relative_to(m) for m in mounts)
        assert container["image"].split(":")[0] == "imgclf"
        assert spec["securityContext"]["runAsUser"] == 1000  # the training image's user
        shared = sorted(
            json.dumps([m, volumes[m["name"]]], sort_keys=True) for m in mounts.values()
        )
        seen.append((args, cfg, shared))
    assert seen[0] == seen[1], "the chief and the workers differ in command, config or volumes"
