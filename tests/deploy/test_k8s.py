"""deploy/k8s: TF Serving Deployment + Service, and two-worker training Jobs with TF_CONFIG."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

from configs import loader
from registry import store
from tests.deploy import dockerfile, serving_protos

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
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
        "serving.yaml": ["Deployment", "Service"],
        "storage.yaml": ["PersistentVolumeClaim"] * 3,
        "training.yaml": ["ConfigMap", "Service", "Job", "Job"],
    }
    resources = only(documents("kustomization.yaml"), "Kustomization")["resources"]
    assert sorted(resources) == sorted(k for k in kinds if k != "kustomization.yaml")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_everything():
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(built) == len([d for d in manifests() if d["kind"] != "Kustomization"])


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


def serving_server_flags() -> dict[str, str]:
    [entrypoint] = [
        i for i in dockerfile.read(SERVING_DIR / "Dockerfile") if i.keyword == "ENTRYPOINT"
    ]
    return dict(arg[2:].partition("=")[::2] for arg in entrypoint.args[1:])


def test_serving_probes_ask_tf_serving_for_the_model_status():
    deployment = only(documents("serving.yaml"), "Deployment")
    [container] = pod_spec(deployment)["containers"]
    rest_port = int(serving_server_flags()["rest_api_port"])
    models = set()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        match = STATUS_URL.fullmatch(get["path"])
        assert match, f"{probe} path {get['path']} is not TF Serving's /v1/models/<model>"
        models.add(store.check_model_name(match["model"]))
        assert container_port(container, get["port"]) == rest_port
    assert len(models) == 1  # every probe watches the same model
    assert (
        container["readinessProbe"]["periodSeconds"] <= container["livenessProbe"]["periodSeconds"]
    )
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests)


def test_serving_ports_match_between_server_deployment_and_service():
    docs = documents("serving.yaml")
    deployment, service = only(docs, "Deployment"), only(docs, "Service")
    [container] = pod_spec(deployment)["containers"]
    server = serving_server_flags()
    assert {p["containerPort"] for p in container["ports"]} == {
        int(server["port"]),
        int(server["rest_api_port"]),
    }
    for port in service["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == port["port"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()


def test_serving_mounts_the_store_where_the_server_reads_it():
    deployment = only(documents("serving.yaml"), "Deployment")
    [container] = pod_spec(deployment)["containers"]
    assert container["image"].split(":")[0] == "imgclf-serving"
    config_dir = str(Path(serving_server_flags()["model_config_file"]).parent)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    assert mount["readOnly"] is True


def test_prometheus_annotations_match_the_monitoring_config():
    deployment = only(documents("serving.yaml"), "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    monitoring = text_format.Parse(
        (SERVING_DIR / "monitoring.config").read_text(), serving_protos.MonitoringConfig()
    )
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == serving_server_flags()["rest_api_port"]


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
