"""Training to a wall-clock budget (``train.budget_minutes``, `s2s train --budget 60m`).

Users on a laptop or a small server have minutes, not a step count. With a budget:

- the learning rate warms up over ``warmup_steps``, then follows a cosine from ``lr`` down
  to ``min_lr`` driven by elapsed training time, reaching the floor at the deadline;
- validations are spaced by time so that they take at most ``valid_share`` of the budget
  (the first after 5 % of it; each then measures its own cost to place the next);
- training stops early enough to leave time for the end: averaging the last step
  checkpoints and keeping whichever scores best on validation, the average or the best
  single checkpoint (`s2s.run.averaging.best_average`).

Elapsed time, the last validation's cost and the next validation's time are saved with the
run's progress, so a resumed run continues the same schedule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s2s.errors import S2SError

if TYPE_CHECKING:
    from s2s.config import TrainConfig

# the first validation comes after this share of the budget; later ones never closer
FIRST_VALIDATION_SHARE = 0.05
MIN_VALIDATION_SPACING_SHARE = 0.02
# training never stops before this share of the budget to leave time for the end
MIN_TRAINING_SHARE = 0.5

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """Minutes in ``text``: a number of minutes (``90``) or a duration such as ``60m``,
    ``1h``, ``1h30m`` or ``45s``."""
    cleaned = text.strip().lower()
    try:
        minutes = float(cleaned)
    except ValueError:
        match = _DURATION.fullmatch(cleaned)
        if not cleaned or match is None or not any(match.groups()):
            raise S2SError(
                f"--budget {text!r}: expected minutes (90) or a duration (60m, 1h30m, 45s)"
            ) from None
        hours, mins, seconds = (float(g) if g else 0.0 for g in match.groups())
        minutes = 60 * hours + mins + seconds / 60
    if not math.isfinite(minutes) or minutes <= 0:
        raise S2SError(f"--budget {text!r}: the budget must be a positive time")
    return minutes


@dataclass(frozen=True)
class BudgetPlan:
    """When to validate and stop, and the learning-rate decay, for ``minutes`` of training
    in which validation takes at most ``share``."""

    minutes: float
    share: float

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    def decay(self, elapsed: float) -> float:
        """The cosine factor (1 at the start, 0 at the deadline) at ``elapsed`` seconds."""
        progress = min(max(elapsed / self.seconds, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def first_validation(self) -> float:
        """Elapsed seconds of the first validation."""
        return FIRST_VALIDATION_SHARE * self.seconds

    def next_validation(self, ended: float, cost: float) -> float:
        """Elapsed seconds of the next validation, after one that ended at ``ended`` and
        took ``cost`` seconds: validation then takes ``share`` of the time in between."""
        spacing = cost * (1.0 - self.share) / self.share
        return ended + max(spacing, MIN_VALIDATION_SPACING_SHARE * self.seconds)

    def training_deadline(self, validation_cost: float, final_validations: int) -> float:
        """Elapsed seconds at which training stops: the budget less the last validation and
        the ``final_validations`` of the end (each costing about ``validation_cost``)."""
        reserve = (final_validations + 1) * validation_cost
        return max(self.seconds - reserve, MIN_TRAINING_SHARE * self.seconds)


def budget_summary(train: TrainConfig) -> str:
    """One line telling what the budget decides, since it overrides recipe keys (schedule,
    epochs, time cap) a user may not expect to be overridden."""
    if train.schedule == "budget":
        rate = (
            f"learning rate {train.lr:g} after {train.warmup_steps} warm-up steps, cosine by "
            f"elapsed time to {train.min_lr:g} at the deadline"
        )
    else:
        rate = f"learning rate by the recipe's schedule = {train.schedule!r}"
    return (
        f"training for {train.budget_minutes:g} minutes: {rate}; validation at most "
        f"{train.valid_share:.0%} of the time; no epoch limit or early stopping; at the end, "
        f"the best of the averages of the last 2-{train.keep_last} checkpoints"
    )
