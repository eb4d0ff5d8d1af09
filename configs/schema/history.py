"""The per-epoch metrics of history.csv that training watches and tuning optimises, and
which way each is better."""

from typing import Literal

from pydantic import Field

from configs.schema.base import Section

# history.csv columns whose better direction is known; val_<name> of each train.metrics entry
# is a column too, and needs its direction stated.
METRIC_DIRECTIONS = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}


class MonitoredMetric(Section):
    """A history.csv column a training run watches, and which way is better."""

    monitor: str = Field("val_loss", description="Metric watched, e.g. val_loss, val_accuracy.")
    direction: Literal["max", "min"] | None = Field(
        None,
        description="max or min: whether a higher monitor value is better; null = the metric's "
        "natural one (needed for train.metrics entries).",
    )

    def minimizes(self) -> bool:
        return (self.direction or METRIC_DIRECTIONS[self.monitor]) == "min"


# history.csv columns a train.metrics entry would clash with as val_<name>.
RESERVED_METRICS = ("loss", "accuracy", "learning_rate")
