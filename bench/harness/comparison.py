"""One figure of imgclf beside the same figure of a baseline, measured in the same run, and the
side-by-side table a benchmark prints.

A comparison's ratio is always "how many times better imgclf is" (imgclf / baseline for a rate,
baseline / imgclf for a time or a memory figure), so a ratio below 1 means the baseline won.
"""

from dataclasses import InitVar, dataclass, field


@dataclass
class Comparison:
    """One figure of imgclf beside the same figure of a baseline, measured in the same run.

    `min_ratio`, when given, is the target: met when the ratio reaches it ("ratio >= X" unless
    `target` words it otherwise).
    """

    key: str  # stable identifier, e.g. "serving.rest_p50_ms.c1"
    what: str  # what is measured, for people
    unit: str
    imgclf: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    target: str = ""  # the issue's target in words, e.g. "ratio >= 1.0" or "p50 <= 10 ms"
    target_met: bool | None = None  # None when there is no target
    ratio: float = field(init=False)
    min_ratio: InitVar[float | None] = None

    def __post_init__(self, min_ratio: float | None) -> None:
        if self.higher_is_better:
            self.ratio = self.imgclf / self.baseline if self.baseline else float("inf")
        else:
            self.ratio = self.baseline / self.imgclf if self.imgclf else float("inf")
        if min_ratio is not None:
            self.target = self.target or f"ratio >= {min_ratio}"
            self.target_met = self.ratio >= min_ratio


def print_table(comparisons: list[Comparison]) -> None:
    """imgclf's figure, the baseline's, the ratio and the target, one comparison a line."""
    width = max((len(c.what) for c in comparisons), default=10)
    print(f"{'':{width}}  {'imgclf':>12}  {'baseline':>12}  {'ratio':>7}  target")
    for c in comparisons:
        met = {True: "met", False: "NOT met", None: ""}[c.target_met]
        target = f"{c.target} {met}".strip()
        print(
            f"{c.what:{width}}  {c.imgclf:12.2f}  {c.baseline:12.2f}  {c.ratio:7.2f}  {target}"
            f"  ({c.unit}; baseline: {c.baseline_name})"
        )
