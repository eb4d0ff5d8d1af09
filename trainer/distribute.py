"""Strategy and precision selection: which tf.distribute strategy and dtype policy a run uses."""

import json
import os

import keras
import tensorflow as tf

from configs import schema


def tf_config_workers() -> int:
    """How many workers TF_CONFIG describes (0 when it is unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def build_strategy(cfg: schema.TrainConfig) -> tf.distribute.Strategy:
    """The configured strategy; `auto` picks multi-worker from TF_CONFIG, mirrored for >1 GPU."""
    choice = cfg.distribution
    if choice == "auto":
        if tf_config_workers() > 1:
            choice = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            choice = "none"
    if choice == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if choice == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()  # the default strategy: one device, no overhead


def resolve_precision(cfg: schema.TrainConfig) -> str:
    """mixed_float16 on GPUs for `auto`; float32 on CPUs, where bf16 is a per-model choice."""
    if cfg.precision != "auto":
        return cfg.precision
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def set_precision(policy: str) -> None:
    keras.mixed_precision.set_global_policy(policy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes shared outputs (logs, history, export)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
