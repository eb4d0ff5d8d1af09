"""The config a Tuner or Trainer execution runs with: pinned to its input dataset version, and
(after a Tuner) the tuned best config with the keys the pipeline decides taken from the run's."""

import os

from configs import loader, schema
from tfx_pipeline import component, metadata

# Keys of a run that the pipeline decides, whatever the tuned best.yaml says.
PIPELINE_OWN_KEYS = (
    "train.runs_dir",
    "train.run_id",
    "serving",
    "registry",
    "evaluation",
    "tracking",
    "tuning",
    "pipeline",
)


def pinned_config(cfg: schema.Config, examples: metadata.Artifact) -> schema.Config:
    """A copy of `cfg` reading exactly the input dataset version, whatever 'latest' says now."""
    cfg = cfg.model_copy(deep=True)
    cfg.data.output_dir = os.path.dirname(examples.uri)  # pathlib would make gs:// gs:/
    cfg.data.version = examples.properties["version"]
    return cfg


def tuned_config(cfg: schema.Config, hyperparameters: metadata.Artifact) -> schema.Config:
    """The Tuner's best config, with the keys the pipeline decides taken from `cfg`."""
    tuned = loader.to_dict(loader.load(hyperparameters.uri))
    own = loader.to_dict(cfg)
    for key in PIPELINE_OWN_KEYS:
        head, _, last = key.rpartition(".")
        target = component.lookup(tuned, head, copy=False) if head else tuned
        target[last] = component.lookup(own, key)
    return loader.validate(tuned)
