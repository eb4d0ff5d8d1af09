"""The imgclf pipeline: the components a config declares, run by the runner with caching."""

from configs import schema


def run_pipeline(cfg: schema.Config, no_cache: bool = False):
    """The pipeline as `imgclf pipeline run` runs it; returns the runner's Summary."""
    from tfx_pipeline import dag, runner

    return runner.run(cfg, dag.build_components(cfg.pipeline.tune), no_cache=no_cache)
