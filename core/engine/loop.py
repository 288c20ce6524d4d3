"""The training loop: per epoch, apply the freeze phase, train on the batch source, validate.

One step runs the wholly frozen stages [start, k) without grad (in the fast
precision), then the trainable stages and the head with grad in fp32. Hooks let
checkpointing and interrupt handling join without changing the loop:
`step_hooks` get (trainer, loss) after every optimizer step and `epoch_hooks`
get (trainer, record) after every epoch's outputs are written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from tlzoo.errors import TlzooError
from tlzoo.data.batches import Batch, BatchSource, epoch_seed, seed_everything
from tlzoo.engine.metrics import evaluate
from tlzoo.engine.optim import set_learning_rates
from tlzoo.engine.shared_loss import ShareOfGlobalMean
from tlzoo.model.backbone import count_parameters
from tlzoo.model.freeze import EpochPlan, apply_plan, plan_epoch
from tlzoo.runtime.device import autocast
from tlzoo.runtime.distributed import world_size
from tlzoo.engine.state import TrainState


@dataclass
class LoopConfig:
    epochs: int
    seed: int
    bn: str  # "frozen" or "train"
    device: torch.device
    precision: str  # of frozen and inference passes
    num_classes: int
    patience: int | None = None
    min_delta: float = 0.0
    fast: str = "eager"  # 'folded': validation through a BatchNorm-folded copy (tlzoo.runtime.fast_pass.fast_mode)


@dataclass
class Trainer:
    state: TrainState
    strategy: object  # a FreezeStrategy
    criterion: torch.nn.Module
    train_source: BatchSource
    val_source: BatchSource
    config: LoopConfig
    progress: object  # PlainProgress or RichProgress
    save_best: Callable[["Trainer", dict], None] = lambda trainer, record: None
    save_last: Callable[["Trainer", dict], None] = lambda trainer, record: None
    step_hooks: list[Callable] = field(default_factory=list)
    epoch_hooks: list[Callable] = field(default_factory=list)
    last_eval: object = None  # EvalResult of the latest validation
    best_eval: object = None  # EvalResult of the best epoch's validation in this process (its logits: the report)
    # resume inside an epoch (tlzoo.rundir.resume): an EpochPosition, and where the running epoch is
    resume_at: object = None
    position: tuple = (0, 0.0, 0)  # (batches done in this epoch, loss total, samples) after the last step
    # recipe features (tlzoo.engine.mixing.Mixer, tlzoo.engine.ema.WeightAverage); None: off
    mixer: object = None
    ema: object = None
    tta: str = "none"  # validation views (tlzoo.engine.tta)
    tta_source: object = None  # the validation images without the activation cache, for TTA views
    # under torchrun: tlzoo.runtime.distributed.GradientSync (DDP over the trainable part); None in one process
    sync: object = None
    # the run's EpochPlan per epoch, worked out once by the engine (tlzoo.model.freeze.plan_run); a Trainer
    # made without one (a test, the lr finder) plans each epoch itself from `strategy`
    plans: list = field(default_factory=list)
    step_images: float = 0.0  # what the last step's loss counts for in the epoch's mean loss (its images)

    def fit(self) -> TrainState:
        state = self.state
        while state.epoch < self.config.epochs and not state.stopped_early:
            record = self.run_epoch(state.epoch)
            for hook in self.epoch_hooks:
                hook(self, record)
        return state

    def run_epoch(self, epoch: int) -> dict:
        state, config = self.state, self.config
        started = time.perf_counter()
        seed_everything(epoch_seed(config.seed, epoch))  # dropout and in-process augmentation
        plan = self.plans[epoch] if epoch < len(self.plans) else plan_epoch(state.model, self.strategy, epoch)
        apply_plan(state.model, plan, config.bn)
        if self.ema is not None:
            self.ema.track_trainable(state.model)
        first_step = state.step - (self.resume_at.batch if self.resume_at is not None else 0)
        learning_rates = [group["base_lr"] * plan.phase.lr_scale * state.schedule.factor(epoch, first_step)
                          for group in state.optimizer.param_groups]
        trainable = count_parameters(state.model, trainable_only=True)
        self.progress.start_epoch(epoch, config.epochs, len(self.train_source), "train")
        train_loss = self.train_epoch(epoch, plan)
        if self.sync is not None:
            self.sync.sync_buffers()  # rank 0's BatchNorm statistics everywhere, as its checkpoint holds them

        result, use_ema, recipe = self.validate(plan)
        self.last_eval = result
        record = {"epoch": epoch + 1, "epochs": config.epochs, "train_loss": train_loss,
                  **result.metrics("val_"), "lr": learning_rates, "trainable_params": trainable,
                  "frozen_stages": plan.frozen_stages, "trainable_groups": state.model.num_groups - plan.first_trainable,
                  **recipe}
        monitored = record.get(state.monitor)
        improved = state.is_improvement(monitored)
        record["is_best"] = state.is_kept(monitored)
        if state.is_improvement(monitored, config.min_delta):
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        if config.patience is not None and state.bad_epochs >= config.patience:
            state.stopped_early = state.epoch < config.epochs
        record["seconds"] = time.perf_counter() - started
        if improved:
            state.best_metric = monitored
        if record["is_best"]:
            state.best_epoch = epoch + 1
            state.best_record, state.best_confusion = record, result.confusion
            self.best_eval = result
            if use_ema:  # best.safetensors holds the average that validated better
                with self.ema.applied(state.model):
                    self.save_best(self, record)
            else:
                self.save_best(self, record)
        state.history.append(record)
        self.save_last(self, record)
        self.progress.end_epoch(record)
        if state.stopped_early:
            self.progress.message(f"early stopping: {state.monitor} has not improved for "
                                  f"{state.bad_epochs} epoch(s)")
        return record

    def validate(self, plan: EpochPlan):
        """(EvalResult, whether the EMA weights gave it, extra record fields): the model's validation, and the
        average's when EMA is on; the better of the two (by the monitored metric) is the epoch's candidate."""
        state, config = self.state, self.config

        def run():
            if self.tta != "none" and self.tta_source is not None:  # views need images, not cached activations
                return evaluate(state.model, self.tta_source, config.num_classes, config.device, config.precision,
                                0, config.fast, self.progress.message, tta=self.tta)
            return evaluate(state.model, self.val_source, config.num_classes, config.device, config.precision,
                            plan.frozen_stages,  # a cached validation source skips the frozen stages
                            config.fast, self.progress.message)

        result = run()
        if self.ema is None:
            return result, False, {}
        with self.ema.applied(state.model):
            averaged = run()
        own, ema = result.metrics("model_val_"), averaged.metrics("ema_val_")
        key = state.monitor.removeprefix("val_")
        better = ema[f"ema_val_{key}"] > own[f"model_val_{key}"] if state.higher_is_better else \
            ema[f"ema_val_{key}"] < own[f"model_val_{key}"]
        return (averaged if better else result), better, {**own, **ema, "val_weights": "ema" if better else "model"}

    def train_epoch(self, epoch: int, plan: EpochPlan) -> float:
        state, total, count = self.state, 0.0, 0
        resume, self.resume_at = self.resume_at, None
        for index, batch in enumerate(self.train_source.epoch(epoch, plan.frozen_stages)):
            if resume is not None and index < resume.batch:
                # trained before the stop: drawn again so the loader stays in step, then dropped; the RNG
                # goes back to its state at the stop just before the next batch loads
                if index == resume.batch - 1:
                    total, count = resume.restore()
                continue
            scale = plan.phase.lr_scale * state.schedule.factor(epoch, state.step)
            set_learning_rates(state.optimizer, scale)
            value = self.train_step(batch, plan.frozen_stages, epoch)
            state.step += 1
            total += value * self.step_images
            count += self.step_images
            self.position = (index + 1, total, count)
            self.progress.advance(value)
            for hook in self.step_hooks:
                hook(self, value)
        if self.sync is not None:  # the epoch's loss over every rank's images
            from tlzoo.runtime.distributed import all_reduce_sum

            total, count = all_reduce_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
        return total / count if count else math.nan

    def train_step(self, batch: Batch, frozen_stages: int, epoch: int) -> float:
        model, config = self.state.model, self.config
        x = batch.x.to(config.device, non_blocking=True)
        y = batch.y.to(config.device, non_blocking=True)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if batch.start < frozen_stages:
            with torch.no_grad(), autocast(config.precision, config.device):
                x = model.forward_stages(x, batch.start, frozen_stages)
            x = x.float()
        mixed = self.mixer.mix(x, y, self.state.step) if self.mixer is not None else None
        if mixed is not None:  # where the trainable part starts: images, or the frozen prefix's activations
            x = mixed.x
        start = max(batch.start, frozen_stages)
        if self.sync is None:
            logits = model.head(model.forward_stages(x, start))
            criterion, self.step_images = self.criterion, batch.y.numel()
        else:  # DDP averages the gradients of every rank's share of the global batch in backward()
            logits = self.sync(x, start)
            criterion = ShareOfGlobalMean(self.criterion, batch.real)
        loss = criterion(logits, y) if mixed is None else mixed.loss(criterion, logits, y)
        if self.sync is not None:  # this rank's part of the epoch's loss: the ranks' values average to the mean
            self.step_images = criterion.images / world_size()
        value = loss.item()
        bad = not math.isfinite(value)
        if self.sync is not None:
            from tlzoo.runtime.distributed import any_rank

            if any_rank(bad) and not bad:  # every rank stops before the update, not only the one that saw it
                raise TlzooError(f"the training loss became NaN or infinite on another process of the job at "
                                 f"epoch {epoch + 1}, step {self.state.step + 1}; the run stopped before updating "
                                 "the weights", "lower train.optimizer.lr, or check the data for broken images")
        if bad:  # before the update, so no NaN ever reaches the weights
            raise TlzooError(f"the training loss became {value} at epoch {epoch + 1}, step {self.state.step + 1}; "
                             "the run stopped before updating the weights",
                             "lower train.optimizer.lr, or check the data for broken images")
        self.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.state.optimizer.step()
        if self.ema is not None:
            self.ema.update(model, self.state.step + 1)
        return value
