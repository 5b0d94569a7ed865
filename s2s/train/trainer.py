"""The training loop: token-budget batches, AdamW with warm-up, clipping, label smoothing,
gradient accumulation, mixed precision, validation with BLEU, best-k checkpoints, early
stopping, and resume from the last checkpoint."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from s2s.atomic import DATASETS_TEMPORARY, atomic_write_bytes, remove_stale_temporaries
from s2s.config import Config, TrainConfig, config_to_toml
from s2s.core.cell_registry import side_cells
from s2s.core.initialisation import initialise
from s2s.data.batching import Batch
from s2s.data.tokenizer import (
    PAD_ID,
    tokenizer_files,
)
from s2s.errors import S2SError
from s2s.kernels.device import resolve_device
from s2s.kernels.precision import autocast_factory, make_grad_scaler, resolve_amp
from s2s.run.averaging import best_average, prune_step_checkpoints
from s2s.run.cell_record import record_cell, resolve_cell_options
from s2s.run.checkpoint import load_checkpoint, save_checkpoint
from s2s.run.directory import RunDir
from s2s.run.lock import lock_run_directory
from s2s.run.metrics_log import append_record
from s2s.run.resume import (
    capture_rng,
    check_resumable,
    keep_saved_start,
    read_last_record,
    restore_rng,
    seed_all,
    trim_metrics_log,
)
from s2s.run.weights import load_weights
from s2s.scores import lower_is_better
from s2s.train.budget import BudgetPlan, budget_summary
from s2s.train.compiling import compile_step_cells
from s2s.train.distributed import Single, join
from s2s.train.faults import (
    BatchPlace,
    PendingStep,
    StepChecks,
    clip_divisor,
    grad_norm,
    nonfinite,
    out_of_memory_hint,
    step_unless,
    supports_skip_flag,
)
from s2s.train.schedule import LearningRateSchedule
from s2s.train.signals import GracefulStop, Interrupted
from s2s.train.tensorboard_log import TrainingBoard
from s2s.train.validation import loss_scores

if TYPE_CHECKING:
    from s2s.tasks.task import Task

log = logging.getLogger("s2s.train")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a run resumes where it stopped."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    bad_validations: int = 0
    elapsed: float = 0.0
    best_metric: float | None = None
    best: list[dict] = field(default_factory=list)  # [{'file','step','metric'}], best first
    bad_steps: int = 0  # consecutive steps skipped for a non-finite loss or gradient
    validated_step: int = -1  # step of the last validation
    # the loss window (see LossWindow) at the save, so train_loss is the same after resume
    window_loss: float = 0.0
    window_tokens: int = 0
    window_seconds: float = 0.0
    # with train.budget_minutes: when the next validation is due, and what the last cost
    next_validation: float = 0.0
    validation_seconds: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> Progress:
        """Read a checkpoint's progress; keys of other s2s versions are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


LAST_KEPT = "the last checkpoint is kept; free some space and run the same command to resume"


def remove_run_temporaries(run: RunDir) -> None:
    """Delete every temporary a killed run can leave (never valid files): of atomic writes
    and the data cache (HF datasets' own included) and of archive extraction."""
    for folder in (run.path, run.checkpoints, run.cache / "archives"):
        remove_stale_temporaries(folder)
    remove_stale_temporaries(run.cache, DATASETS_TEMPORARY)


def label_smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Summed cross-entropy over non-pad target tokens."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        target.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=smoothing,
        reduction="sum",
    )


def fused_optimizer_fits(params: list[torch.nn.Parameter]) -> bool:
    """torch's fused AdamW/SGD kernels exist for floating-point parameters on CPU and CUDA;
    they are faster there (AdamW about 3x on CPU) and skip a bad step without a sync."""
    return bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (the default), or plain SGD, which trains small recurrent language models
    faster than Adam (with a high rate, tight clipping and plateau decay); fused where the
    parameters allow it."""
    params = list(model.parameters())
    fused = True if fused_optimizer_fits(params) else None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused
    )


@dataclass
class LossWindow:
    """The finite steps since the last validation: summed loss (on the device), target
    tokens, and when the window opened."""

    loss: torch.Tensor | float = 0.0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def resumed(cls, progress: Progress) -> LossWindow:
        """The window a checkpoint saved (empty in checkpoints from before it was saved)."""
        start = time.perf_counter() - progress.window_seconds
        return cls(progress.window_loss, progress.window_tokens, start)

    def keep_in(self, progress: Progress) -> None:
        """Note the window in ``progress`` as plain numbers (one sync), for a checkpoint."""
        progress.window_loss = float(self.loss)
        progress.window_tokens = self.tokens
        progress.window_seconds = time.perf_counter() - self.start


class Trainer:
    """The training loop of one run directory: owns the model, optimiser and schedule, and
    asks its task's hooks (a subclass per task) for data, batches, loss and scores.
    ``task`` is the recipe's task object (`Task.make_trainer` passes itself); left out, the
    subclass's `_default_task` finds it (a trainer built directly, in a test or a tool)."""

    # whether the validation loss is a per-token cross-entropy, whose exponential (valid_ppl)
    # means something
    loss_is_cross_entropy = True

    def __init__(
        self, config: Config, run: RunDir, quiet: bool = False, task: Task | None = None
    ) -> None:
        self.config = config
        self.task = task if task is not None else self._default_task()
        self.run = run
        self.quiet = quiet
        cfg = config.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_all(cfg.seed)
        device = resolve_device(cfg.device)
        self.dist: Single = join(device, self.task)  # torchrun: one rank of several
        self.device = self.dist.device(device)
        self.quiet = quiet or not self.dist.is_main  # one progress display: rank 0's
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.autocast = autocast_factory(self.amp_dtype, self.device)
        self.scaler = make_grad_scaler(self.amp_dtype, self.device)

        side_cells(config.model)  # a bad cell on either side: fail before work
        resolve_cell_options(config.model)  # the saved config names every option the cells use
        with self.dist.main_first():  # rank 0 trains the tokeniser, fills caches; then the rest
            if self.dist.is_main:
                lock_run_directory(run.path)  # creates it; before anything is read or rewritten
                remove_run_temporaries(run)
            saved = self._resumable_payload()  # checked before anything is rewritten
            if saved is not None:
                self._require_tokenizer_files()
            self._prepare_data()
            if self.dist.is_main:
                atomic_write_bytes(run.config_file, config_to_toml(config).encode("utf-8"))

        self.model = initialise(self._build_model(), config.model).to(self.device)
        if cfg.compile:
            compile_step_cells(self.model)
        self.optimizer = make_optimizer(self.model, cfg)
        self.skip_on_device = supports_skip_flag(self.optimizer)  # no sync to skip a step
        batches_per_epoch = len(self._epoch_batches(0))
        per_step = cfg.accum_steps * self.dist.world_size
        total = cfg.max_steps or math.ceil(batches_per_epoch / per_step) * cfg.max_epochs
        self.schedule = LearningRateSchedule(cfg, total)
        self.budget = (
            BudgetPlan(cfg.budget_minutes, cfg.valid_share) if cfg.budget_minutes else None
        )
        if self.budget is not None and self.dist.is_main:
            log.info("%s", budget_summary(cfg))
        self.progress = Progress()
        self.window = LossWindow()  # the finite steps since the last validation
        self.last_grad_norm: torch.Tensor | None = None  # on the device, read when logged
        self._after_model()
        self._saved_at: tuple[int, int] | None = None  # (step, epoch) of the last save
        if saved is not None:
            self._resume(saved)
        if not self.dist.is_main:  # dropout masks of their own (weights come from rank 0)
            seed_all(cfg.seed + 7919 * self.dist.rank + self.progress.step)
        # training runs through DDP's wrapper; validation and decoding use the bare model
        self.train_model = self.dist.wrap(self.model, self.device)

    def _default_task(self) -> Task:
        """The task of a trainer built without one: the task layer's trainers look up the
        recipe's task; the generic loop knows none."""
        raise TypeError(f"{type(self).__name__} needs task= (use Task.make_trainer)")

    # -- task hooks: each task's trainer implements these ---------------------------------
    def _prepare_data(self) -> None:
        """Set ``tokenizers``, the training and validation data, and whatever
        `_epoch_batches` needs to cut the training data into batches."""
        raise NotImplementedError

    def _build_model(self) -> torch.nn.Module:
        return self.task.build_model(self.config, self.tokenizers)

    def _after_model(self) -> None:
        """Objects that need the model on its device (the validation decoder)."""

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This epoch's batches of example numbers (deterministic in seed and epoch, so
        resume can rebuild them)."""
        raise NotImplementedError

    def _collate(self, indices: list[int]) -> Batch:
        """The batch of training examples ``indices`` (on the CPU)."""
        raise NotImplementedError

    def _batch_loss(self, batch: Batch) -> torch.Tensor:
        """Summed training loss of one batch already on the device; its normaliser is
        ``batch.num_tgt_tokens``."""
        raise NotImplementedError

    def _loss_scores(self) -> dict[str, float]:
        """Further scores of the last `validation_loss` (a language model's word-level
        perplexity)."""
        return {}

    def _decoded_scores(self) -> dict[str, float]:
        """Scores of decoding the validation split greedily, under their metrics-log keys."""
        return {}

    def _record_session(self) -> None:
        """Note the session and the data sizes in the run's about.json (for `s2s info`)."""
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------
    def _payload(self, full: bool) -> dict:
        payload = {"model": self.model.state_dict(), "config": config_to_toml(self.config)}
        payload["progress"] = json.dumps(asdict(self.progress))
        if full:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["schedule"] = self.schedule.state_dict()
            payload["scaler"] = self.scaler.state_dict()
            payload["rng"] = capture_rng()
        return payload

    def _save_last(self) -> None:
        """Write ``last.pt`` (everything resuming needs), at most once per step, and again
        when an epoch ended or a validation ran after that step's save, so the saved
        progress counts them (`validate` forgets the save)."""
        here = (self.progress.step, self.progress.epoch)
        if self._saved_at != here:
            self.window.keep_in(self.progress)
            if self.dist.is_main:  # every rank holds the same state
                save_checkpoint(self.run.last_checkpoint, self._payload(full=True))
            self._saved_at = here

    def _resumable_payload(self) -> dict | None:
        """The run's last checkpoint, if any, checked against the recipe."""
        path = self.run.last_checkpoint
        if not path.is_file():
            return None
        payload = load_checkpoint(path)
        keep_saved_start(payload, self.config, path)
        check_resumable(payload, self.config, path)
        return payload

    def _tokenizer_files(self) -> set[Path]:
        """The tokeniser model file(s) of the run (task hook)."""
        return set(tokenizer_files(self.run.path, self.config.tokenizer.joint))

    def _require_tokenizer_files(self) -> None:
        """Refuse to resume without the tokeniser the checkpoint was trained with: a new one
        would give the saved embeddings other pieces under the same ids."""
        for path in sorted(self._tokenizer_files()):
            if not path.is_file():
                raise S2SError(
                    f"{path}: tokenizer model missing; the run cannot be resumed without the "
                    "tokenizer it was trained with: restore the file, or start over with "
                    "--restart"
                )

    def _resume(self, payload: dict) -> None:
        """Restore every piece of training state, then drop what the run wrote after it."""
        path = self.run.last_checkpoint
        load_weights(self.model, payload["model"], path)
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.schedule.load_state_dict(payload["schedule"])
            self.scaler.load_state_dict(payload["scaler"])
            restore_rng(payload["rng"])
            self.progress = Progress.from_json(payload["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise S2SError(
                f"{path}: cannot resume from its training state ({first}); "
                "use --restart or another --out"
            ) from None
        self._saved_at = (self.progress.step, self.progress.epoch)
        if self.dist.is_main:
            trim_metrics_log(self.run.metrics_log, self.progress.step)
            self._forget_later_best()
        log.info("resuming from step %d (epoch %d)", self.progress.step, self.progress.epoch + 1)

    def _forget_later_best(self) -> None:
        """Best checkpoints saved after ``last.pt`` (then killed) are written again on replay;
        listed ones that are gone (pruned after ``last.pt``, then killed) are forgotten."""
        present = [e for e in self.progress.best if (self.run.checkpoints / e["file"]).is_file()]
        for entry in self.progress.best:
            if entry not in present:
                log.warning("%s: best checkpoint %s is gone", self.run.path, entry["file"])
        self.progress.best = present
        listed = {entry["file"] for entry in present}
        for path in self.run.checkpoints.glob("step-*.pt"):
            step = path.stem.removeprefix("step-")
            if path.name not in listed and step.isdigit() and int(step) > self.progress.step:
                path.unlink(missing_ok=True)
        self.run.write_best(self.progress.best)

    def _save_best(self, metric: float, higher_is_better: bool) -> bool:
        """Keep the best ``keep_best`` validated weights and the ``keep_last`` most recent;
        True if this one is the new best."""
        progress, keep = self.progress, self.config.train.keep_best
        keep_last = self.config.train.keep_last
        name = f"step-{progress.step}.pt"
        entries = [*progress.best, {"file": name, "step": progress.step, "metric": metric}]
        entries.sort(key=lambda e: -e["metric"] if higher_is_better else e["metric"])
        kept = entries[:keep]
        improved = kept[0]["file"] == name
        if keep_last or any(e["file"] == name for e in kept):
            save_checkpoint(self.run.checkpoints / name, self._payload(full=False))
        prune_step_checkpoints(self.run.checkpoints, [e["file"] for e in kept], keep_last)
        progress.best = kept
        self.run.write_best(kept)
        return improved

    def _keep_best_average(self) -> None:
        """A budgeted run's end: the best-scoring average of its last step checkpoints
        becomes its default checkpoint if it beats the best single one."""
        name = self.config.train.early_stopping_metric
        try:
            found = best_average(
                self.run, self.task, self.device.type, self.config.train.keep_last,
                name, self.progress.best_metric,
            )  # fmt: skip
        except S2SError as error:  # a task that cannot validate a checkpoint: keep the best
            log.warning("no checkpoint average chosen: %s", error)
            return
        if found is None:
            log.info("no checkpoint average beats the best checkpoint on valid_%s", name)
            return
        path, value = found
        entry = {"file": path.name, "step": self.progress.step, "metric": value}
        self.progress.best = [entry, *self.progress.best]
        self.progress.best_metric = value
        self.run.write_best(self.progress.best)
        self._saved_at = None
        self._save_last()
        if not self.quiet:
            print(
                f"kept {path.name}: valid_{name} {value} (the run's default checkpoint)",
                file=sys.stderr,
            )

    # -- validation -----------------------------------------------------------------------
    def validation_loss(self) -> tuple[float, int]:
        """Mean per-token cross-entropy (no smoothing) on the validation split, and its
        token count."""
        raise NotImplementedError

    def validate(self, train_loss: float, tokens_per_second: float) -> dict:
        """Score the model on `valid`, keep the best checkpoints, log the record. Under DDP
        rank 0 alone decodes (BLEU and ROUGE are corpus scores, not sums over shards) and
        decides; its record reaches every rank, so all take the same early-stopping and
        learning-rate decisions."""
        loss, _ = self.validation_loss()
        record = None
        if self.dist.is_main:
            record = self._validation_record(loss, train_loss, tokens_per_second)
        record, best = self.dist.broadcast((record, self.progress.best))
        name = self.config.train.early_stopping_metric
        metric = loss if name == "loss" else record[f"valid_{name}"]
        improved = record["best"]
        self.progress.best = best
        self.progress.bad_validations = 0 if improved else self.progress.bad_validations + 1
        if improved:
            self.progress.best_metric = metric
        self.progress.validated_step = self.progress.step
        self.schedule.on_validation(improved)
        self._saved_at = None  # a save at this step predates the validation: save again
        self.model.train()
        return record

    def _validation_record(self, loss: float, train_loss: float, tokens_per_second: float) -> dict:
        """The metrics-log record of a validation (rank 0): scores, and whether they are the
        best so far (its checkpoint then saved)."""
        record = {
            "step": self.progress.step,
            "epoch": self.progress.epoch + 1,
            "train_loss": round(train_loss, 4),
            **loss_scores(loss, perplexity=self.loss_is_cross_entropy),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_second": round(tokens_per_second, 1),
            "elapsed_minutes": round(self.progress.elapsed / 60, 2),
        }
        record.update(self._loss_scores())
        if self.config.train.valid_decode:
            record.update(self._decoded_scores())
        name = self.config.train.early_stopping_metric
        metric = loss if name == "loss" else record.get(f"valid_{name}")
        if metric is None:
            raise S2SError(
                f"train.early_stopping_metric = {name!r}: validation gives no valid_{name} "
                f"(it gives {', '.join(k for k in record if k.startswith('valid_'))})"
            )
        improved = False
        if math.isfinite(loss) and math.isfinite(metric):
            improved = self._save_best(metric, higher_is_better=not lower_is_better(name))
        else:  # diverged weights: never a best checkpoint, and patience keeps counting
            log.warning(
                "step %d: validation %s is not finite; its weights are not saved",
                self.progress.step,
                "loss" if not math.isfinite(loss) else name,
            )
        record["best"] = improved
        append_record(self.run.metrics_log, record, kept=LAST_KEPT)
        return record

    # -- training -------------------------------------------------------------------------
    def _train_step(
        self, batches: list[Batch], idle: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor]:
        """One optimiser step over this rank's batches (``accum_steps`` of them, fewer at the
        end of an epoch). Returns the step's summed loss and target tokens over all ranks and
        its non-finite flag, all left on the device (no host sync); a step with the flag set
        changed neither the weights nor the optimiser. An ``idle`` rank (no batch left in an
        epoch's last group) runs its one batch with weight 0, to join the gradient all-reduce.
        """
        cfg = self.config.train
        tokens: torch.Tensor | int = 0 if idle else sum(b.num_tgt_tokens for b in batches)
        divisor: torch.Tensor | int = tokens
        if self.dist.world_size > 1:
            # DDP averages gradients over ranks: divide by (tokens of all ranks) / world
            tokens = self.dist.sum_tensor(torch.full((), tokens, device=self.device))
            divisor = tokens.clamp(min=1) / self.dist.world_size
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.rate(self.progress.step, self.progress.elapsed)
        total = torch.zeros((), device=self.device)
        for number, batch in enumerate(batches, 1):
            with self.dist.no_sync(self.train_model, last=number == len(batches)):
                loss = self._batch_loss(batch.to(self.device))
                if idle:
                    loss = loss * 0.0
                self.scaler.scale(loss / divisor).backward()
            total += loss.detach()
        total = self.dist.sum_tensor(total)  # every rank judges the same loss: same skips
        self.scaler.unscale_(self.optimizer)
        clip_in_step = self.skip_on_device and cfg.clip_norm > 0  # fused: clips as it steps
        clip_first = 0.0 if clip_in_step else cfg.clip_norm
        self.last_grad_norm = grad_norm(self.model.parameters(), clip_first)
        bad = nonfinite(total, self.last_grad_norm)
        if self.skip_on_device:
            divisor = clip_divisor(self.last_grad_norm, cfg.clip_norm) if clip_in_step else None
            step_unless(self.optimizer, bad, divisor)
        elif not bad or self.scaler.is_enabled():  # one sync; fp16's scaler skips by itself
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total, tokens, bad

    def _time_up(self) -> bool:
        return self._budget_spent() or self._past_max_minutes()

    def _past_max_minutes(self) -> bool:
        limit = self.config.train.max_minutes
        return bool(limit) and self.progress.elapsed >= limit * 60

    def _budget_spent(self) -> bool:
        """Whether a budgeted run must stop training to finish within its budget."""
        if self.budget is None:
            return False
        progress, finals = self.progress, self.config.train.keep_last
        return progress.elapsed >= self.budget.training_deadline(
            progress.validation_seconds, finals
        )

    def _should_stop(self, time_up: bool) -> str | None:
        """Why training ends now, or None. ``time_up``: the time limit as all ranks agree on
        it (each rank's clock differs a little)."""
        cfg, progress = self.config.train, self.progress
        if cfg.max_steps and progress.step >= cfg.max_steps:
            return f"reached train.max_steps = {cfg.max_steps}"
        if time_up and self._budget_spent():
            return (
                f"reached train.budget_minutes = {cfg.budget_minutes} (less the final validations)"
            )
        if time_up:
            return f"reached train.max_minutes = {cfg.max_minutes}"
        if cfg.patience and progress.bad_validations >= cfg.patience:
            return f"no improvement in {cfg.patience} validations (early stopping)"
        return None

    def train(self) -> dict:
        """Train until a limit is reached; returns the last validation record. SIGINT or
        SIGTERM finishes the step, saves and raises `Interrupted`; running out of memory is
        a one-line error suggesting a smaller batch."""
        with GracefulStop() as stop, out_of_memory_hint(self.config.train.max_tokens, self._where):
            return self._run(stop)

    def _where(self) -> str:
        return f"at step {self.progress.step + 1} (epoch {self.progress.epoch + 1})"

    def _interrupted(self, signum: int) -> Interrupted:
        self._save_last()
        return Interrupted(
            signum,
            f"stopped at step {self.progress.step}; checkpoint saved in {self.run.checkpoints}",
        )

    def _step_on_group(self, group: list[list[int]], checks: StepChecks) -> None:
        """Train one optimiser step on a group of an epoch's batches (this rank's share of
        them) and queue its non-finite flag, unread, in ``checks``."""
        progress = self.progress
        share = self.dist.share(group, self.config.train.accum_steps)
        collated = [self._collate(indices) for indices in share or group[:1]]
        if share:
            loss, tokens, bad = self._train_step(collated)
        else:  # past the end of the epoch's short last group: join the all-reduce only
            loss, tokens, bad = self._train_step(collated, idle=True)
        first = progress.batch_in_epoch + 1
        progress.step += 1
        progress.batch_in_epoch += len(group)
        lines = tuple(sorted(i + 1 for batch in group for i in batch))
        place = BatchPlace(progress.epoch + 1, first, progress.batch_in_epoch, lines)
        checks.add(PendingStep(progress.step, bad, place, (loss, tokens, self.last_grad_norm)))

    def _settle(self, checks: StepChecks, window: LossWindow, board: TrainingBoard) -> bool:
        """Read the queued step flags (one sync): report skipped steps, count bad steps in a
        row, add the finite steps to the loss window and the board. True if the last step
        was finite."""
        self.progress.bad_steps, finite = checks.settle(self.progress.bad_steps)
        counts = [tokens for _, tokens, _ in finite]  # type: ignore[misc]
        if any(isinstance(count, torch.Tensor) for count in counts):  # DDP: summed on device
            counts = torch.stack(counts).tolist()
        for (loss, _, norm), count in zip(finite, counts, strict=True):  # type: ignore[misc]
            window.loss = window.loss + loss
            window.tokens += int(count)
            board.add(loss, int(count), norm)
        return checks.last_finite

    def _validate_window(self, bar, board: TrainingBoard) -> dict:
        """Validate with the loss window's mean training loss and speed, then open a new
        window (before any save, so a checkpoint after a validation holds an empty one)."""
        window = self.window
        started = time.perf_counter()
        speed = window.tokens / max(started - window.start, 1e-9)
        record = self.validate(float(window.loss) / max(window.tokens, 1), speed)
        if self.budget is not None:  # place the next validation by what this one cost
            cost = time.perf_counter() - started
            progress = self.progress
            progress.validation_seconds = cost
            progress.next_validation = self.budget.next_validation(progress.elapsed + cost, cost)
        self.window = LossWindow()
        bar.report(record)
        board.validation(record)
        return record

    def _run(self, stop: GracefulStop) -> dict:
        from s2s.progress import TrainingProgress

        cfg, progress = self.config.train, self.progress
        self.model.train()
        bar = TrainingProgress(cfg, quiet=self.quiet)
        tensorboard = cfg.tensorboard and self.dist.is_main
        board = TrainingBoard.for_run(
            self.run.tensorboard, tensorboard, cfg.log_every, progress.step
        )
        if self.dist.is_main:
            self._record_session()
            record_cell(self.run, self.config)
        last_record: dict = {}
        checks = StepChecks(cfg.max_bad_steps)
        self.window = LossWindow.resumed(progress)
        stop_reason = self._should_stop(self._time_up())  # a resumed run may already be done
        session_start = time.perf_counter() - progress.elapsed
        per_step = cfg.accum_steps * self.dist.world_size
        while progress.epoch < cfg.max_epochs and stop_reason is None:
            batches = self._epoch_batches(progress.epoch)
            bar.start_epoch(progress.epoch + 1, len(batches), progress.batch_in_epoch)
            while progress.batch_in_epoch < len(batches):
                position = progress.batch_in_epoch
                self._step_on_group(batches[position : position + per_step], checks)
                progress.elapsed = time.perf_counter() - session_start
                done = progress.batch_in_epoch - position
                last_record = self._after_step(done, checks, bar, board) or last_record
                stop_reason = self._stop_now(stop, checks, bar, board)
                if stop_reason:
                    break
            if progress.batch_in_epoch >= len(batches):
                progress.epoch += 1
                progress.batch_in_epoch = 0
        return self._finish(stop_reason, last_record, checks, bar, board)

    def _after_step(self, done: int, checks: StepChecks, bar, board: TrainingBoard) -> dict:
        """Report the step that just ran (``done`` batches); validate and save when due.
        Returns the validation record, or an empty dict when this step did not validate."""
        cfg, progress = self.config.train, self.progress
        validating = self._validation_due()
        saving = bool(cfg.save_every) and progress.step % cfg.save_every == 0
        finite = True
        if validating or saving or progress.step % cfg.log_every == 0:
            finite = self._settle(checks, self.window, board)  # the only reads of the flags
        window = self.window
        seconds = time.perf_counter() - window.start
        bar.update(progress.step, done, window.loss, window.tokens, seconds, self.last_grad_norm)
        board.end_step(progress.step, self.optimizer.param_groups[0]["lr"])
        record: dict = {}
        if validating:
            record = self._validate_window(bar, board)
            self._save_last()
        elif saving and finite:
            self._save_last()  # not in a run of skipped steps: keep the last good one
        return record

    def _validation_due(self) -> bool:
        """Every ``valid_every`` steps, or by time with a budget (all ranks agreeing)."""
        progress = self.progress
        if self.budget is None:
            return progress.step % self.config.train.valid_every == 0
        due_at = progress.next_validation or self.budget.first_validation()
        return self.dist.any_true([progress.elapsed >= due_at])[0]

    def _stop_now(self, stop: GracefulStop, checks: StepChecks, bar, board: TrainingBoard):
        """Why training ends after this step, or None; a signal on any rank stops every rank
        here, saving the step and raising `Interrupted`."""
        signalled, time_up = self.dist.any_true([stop.signum is not None, self._time_up()])
        if signalled:
            self._settle(checks, self.window, board)
            bar.close()
            board.close(self.progress.step)
            raise self._interrupted(stop.signum or signal.SIGTERM)
        return self._should_stop(time_up)

    def _finish(
        self, stop_reason: str | None, last_record: dict, checks: StepChecks, bar, board
    ) -> dict:
        """Validate the last steps if they were not, save, and say why training stopped."""
        progress = self.progress
        bar.close()
        self._settle(checks, self.window, board)
        if progress.validated_step != progress.step:
            last_record = self._validate_window(bar, board)
        board.close(progress.step)
        self._save_last()
        if self.budget is not None and self.dist.is_main:
            self._keep_best_average()
        last_record = last_record or read_last_record(self.run.metrics_log)
        reason = stop_reason or f"reached train.max_epochs = {self.config.train.max_epochs}"
        if not self.quiet:
            print(f"training stopped: {reason}", file=sys.stderr)
        return last_record
