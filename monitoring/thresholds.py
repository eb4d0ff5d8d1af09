"""When served data counts as drifted: the default thresholds of `imgclf monitor drift`."""

from dataclasses import dataclass

PSI_THRESHOLD = 0.2  # the usual "significant shift" level of the population stability index
KS_MIN_DISTANCE = 0.1  # below this a KS distance is not worth an alarm, however many samples
MAX_LOW_CONFIDENCE_RATE = 0.25
MIN_COUNT = 30  # fewer served images than this: reported, never flagged


@dataclass(frozen=True)
class Thresholds:
    psi: float = PSI_THRESHOLD
    ks_min: float = KS_MIN_DISTANCE
    low_confidence_rate: float = MAX_LOW_CONFIDENCE_RATE
    min_count: int = MIN_COUNT
