"""InfraValidator (with pipeline.infra_validation.enabled): the Trainer's export served on free
local ports and its p99 latency held against a budget (serving/infra_validation.py)."""

from pathlib import Path

from core import atomic_write
from tfx_pipeline import artifact_types, component
from tfx_pipeline.components import pusher

REPORTED = ("passed", "p50_ms", "p99_ms", "requests", "errors", "budget_ms", "reason")


def run(ctx: component.Context) -> dict:
    from serving import infra_validation

    model = ctx.inputs["model"]
    report = infra_validation.infra_validate(
        Path(model.uri), ctx.cfg.pipeline.infra_validation, pusher.push_model_name(ctx.cfg)
    )
    path = atomic_write.write_json(
        ctx.output_dir("InfraValidator") / "infra_blessing.json", report, sort_keys=True
    )
    properties = {key: report.get(key) for key in REPORTED}
    return {
        "infra_blessing": artifact_types.artifact(artifact_types.INFRA_BLESSING, path, **properties)
    }
