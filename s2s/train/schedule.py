"""Learning-rate schedules: linear warm-up, then inverse square root, constant, cosine,
reduce-on-plateau decay or a cosine over a time budget, with a floor at ``min_lr``."""

from __future__ import annotations

import math

from s2s.config import TrainConfig
from s2s.train.budget import BudgetPlan


class LearningRateSchedule:
    """Computes the learning rate for a step; plateau decay listens to validations."""

    def __init__(self, config: TrainConfig, total_steps: int) -> None:
        self.config = config
        self.total_steps = max(total_steps, 1)
        self.plateau_scale = 1.0
        self.bad_validations = 0

    def rate(self, step: int, elapsed: float = 0.0) -> float:
        """The rate of ``step``, taken after ``elapsed`` seconds of training (the budget
        schedule decays with time, the others with steps)."""
        cfg = self.config
        warmup = cfg.warmup_steps
        if warmup and step < warmup:
            return cfg.lr * (step + 1) / warmup
        if cfg.schedule == "budget":
            plan = BudgetPlan(cfg.budget_minutes, cfg.valid_share)
            return cfg.min_lr + (cfg.lr - cfg.min_lr) * plan.decay(elapsed)
        if cfg.schedule == "inverse_sqrt":
            factor = math.sqrt(max(warmup, 1) / max(step, 1))
        elif cfg.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(self.total_steps - warmup, 1))
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif cfg.schedule == "plateau":
            factor = self.plateau_scale
        else:
            factor = 1.0
        return max(cfg.lr * factor, cfg.min_lr)

    def on_validation(self, improved: bool) -> None:
        """Plateau decay: scale down after ``plateau_patience`` validations without gain."""
        if self.config.schedule != "plateau":
            return
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations > self.config.plateau_patience:
            self.plateau_scale *= self.config.plateau_factor
            self.bad_validations = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.bad_validations = state["bad_validations"]
