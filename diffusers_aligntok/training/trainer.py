"""The trainer every recipe shares: accelerator, optimiser and schedule, EMA, resume, step cadences, trackers,
checkpoints and the final `metrics.json` (the parts of torchtitan's `Trainer` and of the diffusers accelerate examples
that do not depend on what is trained).

A recipe (`loop.py` for the tokenizer stages, `dit_loop.py`, `t2i_loop.py`) builds its models and data and supplies
the step function, validation and export; its loop then reads top to bottom:

    trainer = Trainer(config.training, output_dir, name="DiT")
    ...                                                   # models and data, built after the seed is set
    optimizer = trainer.adamw(model.parameters(), config.optimizer)
    lr_scheduler = trainer.lr_scheduler(optimizer, config.optimizer)
    model, optimizer, dataloader, lr_scheduler = trainer.accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    trainer.track_ema(trainer.accelerator.unwrap_model(model))
    trainer.resume(resume_from_checkpoint, training_state={"model_config": ...})
    trainer.start_run("aligntok_dit", config_to_dict(config), run_record)
    for batch in trainer.micro_batches(dataloader):
        with trainer.accelerator.accumulate(model):
            logs = ...                                    # the recipe's step: forward, backward, optimiser step(s)
        if not trainer.accelerator.sync_gradients:
            continue
        trainer.finish_optimizer_step()                   # EMA update, step counter, progress bar
        if trainer.due(config.training.log_every_steps):
            trainer.log({...})
        if trainer.due(config.training.checkpointing_steps):
            trainer.save_checkpoint({"transformer": model})
        if trainer.due(config.training.validation_steps):
            with trainer.ema_weights():
                ...                                       # the recipe's validation
    ...                                                   # the recipe's export
    trainer.write_metrics(output_dir, {...})
    trainer.finish()

Everything else accelerate already does (prepare, accumulate, autocast, `save_state`/`load_state` of models,
optimisers, schedulers and RNG states) is called directly on `trainer.accelerator`; diffusers' `EMAModel` holds the
EMA, `get_scheduler` builds the schedule, and `checkpointing.py` writes checkpoints atomically and rotates them.
"""

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..utils import to_jsonable
from .checkpointing import check_resume_compatible, resolve_resume_checkpoint, save_checkpoint
from .config import OptimizerConfig, TrainingConfig


logger = get_logger(__name__)


def build_adamw(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    optimizer_config: OptimizerConfig,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
) -> torch.optim.AdamW:
    """AdamW with `optimizer_config`'s betas, epsilon, weight decay and implementation (fused unless
    `fused_adamw: false`); `learning_rate` and `weight_decay` replace the config's. Parameter groups may set their own
    `lr`. Build it before `accelerator.prepare`, as usual: the fused kernel runs wherever the parameters end up."""
    return torch.optim.AdamW(
        parameters,
        lr=optimizer_config.learning_rate if learning_rate is None else learning_rate,
        betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
        eps=optimizer_config.adam_epsilon,
        weight_decay=optimizer_config.weight_decay if weight_decay is None else weight_decay,
        fused=optimizer_config.fused_adamw or None,
        foreach=None if optimizer_config.fused_adamw else True,
    )


def build_ema(model: torch.nn.Module, decay: float) -> EMAModel:
    """diffusers' `EMAModel` of `model`'s parameters, updated with torch's multi-tensor (foreach) ops: on CUDA a few
    kernels per step instead of two per parameter tensor; on the CPU, where there are no launches to save, it is within
    the noise of the per-tensor loop (`benchmarks/optimizer_speed.py`: medians 0.46-1.22x over three runs). It briefly
    holds one difference tensor per trained parameter."""
    return EMAModel(model.parameters(), decay=decay, foreach=True)


class Trainer:
    """Owns the parts of a training run that every recipe shares; the recipe owns its models, data, step and export.

    Constructing it builds the `Accelerator` (with a `ProjectConfiguration` under `output_dir`, `logs/` for the
    trackers) and seeds every generator with `training.seed`, so models built afterwards start from the seed.

    Args:
        training (`TrainingConfig`): The run's `training:` section (any recipe's extension of it).
        output_dir (`str` or `Path`): Where the run writes; checkpoints go to `<output_dir>/checkpoints`.
        name (`str`): A short name for the progress bar and log lines, e.g. `"DiT"` or `"stage 2"`.
    """

    def __init__(self, training: TrainingConfig, output_dir: str | Path, name: str):
        self.training = training
        self.output_dir = Path(output_dir)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.name = name
        self.accelerator = build_accelerator(training, self.output_dir)
        self.global_step = 0
        # Every `log` call of this run, `{"step": N, **values}`: the loss curve of metrics.json.
        self.logged: list[dict[str, float]] = []
        self.ema: EMAModel | None = None
        self._ema_model: torch.nn.Module | None = None
        # Under FSDP each rank's EMA shadows its own parameter shards, which accelerate's custom-object checkpointing
        # would save from the main process only; they are saved per rank beside the checkpoint instead.
        self._ema_saved_per_rank = False
        self._training_state: dict[str, Any] = {}
        self._progress: tqdm | None = None
        self._last_log_time = time.perf_counter()
        self._last_log_step = 0

    # ---- optimiser and schedule ----

    def adamw(
        self,
        parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        optimizer_config: OptimizerConfig,
        learning_rate: float | None = None,
        weight_decay: float | None = None,
    ) -> torch.optim.AdamW:
        """AdamW with `optimizer_config`'s betas, epsilon and weight decay; `learning_rate` and `weight_decay` replace
        the config's (a second optimiser, such as the GAN discriminator's, has its own). Parameter groups may set
        their own `lr`."""
        return build_adamw(parameters, optimizer_config, learning_rate=learning_rate, weight_decay=weight_decay)

    def lr_scheduler(
        self, optimizer: torch.optim.Optimizer, optimizer_config: OptimizerConfig
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """`optimizer_config.lr_scheduler` over `training.max_train_steps`, with its warmup (diffusers' `get_scheduler`).

        Once prepared, the scheduler steps once per process per optimiser step, hence the scaling by the number of
        processes (as in the diffusers examples).
        """
        num_processes = self.accelerator.num_processes
        return get_scheduler(
            optimizer_config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=optimizer_config.lr_warmup_steps * num_processes,
            num_training_steps=self.training.max_train_steps * num_processes,
        )

    # ---- EMA ----

    def track_ema(self, model: torch.nn.Module) -> EMAModel | None:
        """Starts the EMA of `model`'s parameters (`training.ema_decay`; None: no EMA, and None is returned).

        Call it after `accelerator.prepare` with the unwrapped model, so that under FSDP each rank's EMA shadows its
        own shards. The EMA is checkpointed with the run and updated by `finish_optimizer_step`.
        """
        if self.training.ema_decay is None:
            return None
        self.ema = build_ema(model, self.training.ema_decay)
        self._ema_model = model
        self._ema_saved_per_rank = self.accelerator.distributed_type == DistributedType.FSDP
        if not self._ema_saved_per_rank:
            self.accelerator.register_for_checkpointing(self.ema)
        self.ema.to(self.accelerator.device)
        return self.ema

    @contextlib.contextmanager
    def ema_weights(self, model: torch.nn.Module | None = None) -> Iterator[None]:
        """Inside the block, `model` (default: the EMA's model) holds the EMA weights; on exit (also on an error) its
        training weights are back, bit for bit. Without EMA the block runs on the training weights.

        The swap is in place (no copy of a multi-billion-parameter model); copy the model inside the block to keep
        the EMA weights beyond it.
        """
        if self.ema is None:
            yield
            return
        parameters = list((model or self._ema_model).parameters())
        self.ema.store(parameters)
        self.ema.copy_to(parameters)
        try:
            yield
        finally:
            self.ema.restore(parameters)

    # ---- resume ----

    def resume(self, resume_from_checkpoint: str | None, training_state: dict[str, Any]) -> int:
        """Loads the checkpoint that `resume_from_checkpoint` names (`"latest"`, a name or a path; None: start fresh)
        and returns the step it was saved at (0 when starting fresh).

        `training_state` (the model config, data and anything else that must not change between a run and its resume)
        is saved into every checkpoint of this run; a checkpoint whose saved state differs is refused with a
        `ValueError` naming each difference, before anything is loaded.
        """
        self._training_state = dict(training_state)
        path = resolve_resume_checkpoint(self.checkpoints_dir, resume_from_checkpoint)
        if path is None:
            return self.global_step
        global_step = check_resume_compatible(path, self._training_state)["global_step"]
        self.accelerator.load_state(str(path))
        if self.ema is not None and self._ema_saved_per_rank:
            self.ema.load_state_dict(torch.load(self._ema_shard_path(path), weights_only=False))
        self.global_step = global_step
        logger.info(f"Resumed {self.name} from {path} at step {global_step}")
        return global_step

    # ---- the run ----

    def start_run(
        self, tracker_project: str, recorded_config: dict[str, Any], run_record: dict[str, Any] | None
    ) -> None:
        """Writes `training_config.json` (the config and what the command line decided), starts the trackers under
        `tracker_project` and the progress bar; call it after `resume`, right before the first step."""
        if self.accelerator.is_main_process:
            write_training_config(self.output_dir, recorded_config, run_record, self.accelerator)
            self.accelerator.init_trackers(tracker_project, config=flatten_for_trackers(recorded_config))
        self._progress = tqdm(
            total=self.training.max_train_steps,
            initial=self.global_step,
            desc=self.name,
            disable=not self.accelerator.is_local_main_process,
        )
        self._last_log_time, self._last_log_step = time.perf_counter(), self.global_step

    @property
    def done(self) -> bool:
        """Whether `training.max_train_steps` optimiser steps are done."""
        return self.global_step >= self.training.max_train_steps

    @property
    def images_per_step(self) -> int:
        """Samples in one optimiser step over every process and accumulated micro-batch."""
        training = self.training
        return training.train_batch_size * self.accelerator.num_processes * training.gradient_accumulation_steps

    def micro_batches(
        self, dataloader: torch.utils.data.DataLoader, epoch_hooks: Sequence[Callable[[int], None]] = ()
    ) -> Iterator[Any]:
        """The micro-batches of a prepared map-style `dataloader` from the current step to `training.max_train_steps`,
        epoch after epoch; stops as soon as the last optimiser step is done.

        Each epoch calls `dataloader.set_epoch(epoch)` and every `epoch_hooks(epoch)` (a dataset's own epoch-seeded
        augmentation) first. After a resume the batches the checkpoint's steps consumed in its epoch are skipped, so
        the resumed run sees the batches the uninterrupted one would have.
        """
        accumulation = self.training.gradient_accumulation_steps
        steps_per_epoch = max(1, len(dataloader) // accumulation)
        first_epoch = self.global_step // steps_per_epoch
        batches_to_skip = (self.global_step % steps_per_epoch) * accumulation
        num_epochs = math.ceil(self.training.max_train_steps / steps_per_epoch)
        for epoch in range(first_epoch, num_epochs):
            if self.done:
                return
            dataloader.set_epoch(epoch)
            for hook in epoch_hooks:
                hook(epoch)
            skip = batches_to_skip if epoch == first_epoch else 0
            for batch in self.accelerator.skip_first_batches(dataloader, skip) if skip else dataloader:
                yield batch
                if self.done:
                    return

    def finish_optimizer_step(self) -> None:
        """Bookkeeping after an optimiser step (`accelerator.sync_gradients`): EMA update, step counter, progress."""
        if self.ema is not None:
            self.ema.step(self._ema_model.parameters())
        self.global_step += 1
        if self._progress is not None:
            self._progress.update(1)

    def due(self, every: int) -> bool:
        """True every `every` optimiser steps and at the final step, so the last step is always logged, checkpointed
        and validated."""
        return self.global_step % every == 0 or self.global_step == self.training.max_train_steps

    @property
    def steps_per_second(self) -> float:
        """Optimiser steps per second since the previous `log` (or the start of the run)."""
        elapsed = time.perf_counter() - self._last_log_time
        return (self.global_step - self._last_log_step) / max(elapsed, 1e-9)

    def log(self, values: dict[str, float]) -> dict[str, float]:
        """Sends `values` to the trackers at the current step, adds them to `logged` and returns them."""
        self.accelerator.log(values, step=self.global_step)
        self.logged.append({"step": self.global_step, **values})
        if self._progress is not None and "loss/total" in values:
            self._progress.set_postfix(loss=f"{values['loss/total']:.4f}")
        self._last_log_time, self._last_log_step = time.perf_counter(), self.global_step
        return values

    def save_checkpoint(self, synchronized_models: dict[str, torch.nn.Module]) -> Path:
        """A checkpoint of the whole training state at the current step (`checkpointing.save_checkpoint`: atomic,
        rotated to `training.checkpoints_total_limit`); every rank must call it.

        `synchronized_models` (`{name: prepared model}`) are the trained models whose weights every data-parallel rank
        must share; their per-rank fingerprints are checked and recorded.
        """
        save_ema_shard = self._save_ema_shard if self.ema is not None and self._ema_saved_per_rank else None
        return save_checkpoint(
            self.accelerator,
            self.checkpoints_dir,
            self.global_step,
            self._training_state,
            self.training.checkpoints_total_limit,
            extra_save=save_ema_shard,
            synchronized_models=synchronized_models,
        )

    def write_metrics(self, directory: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
        """Writes `<directory>/metrics.json` from the main process: the step reached, the recipe's `metrics`, the
        number of processes and the precision accelerate actually trained with. Returns what was written (an empty
        mapping on the other processes)."""
        if not self.accelerator.is_main_process:
            return {}
        written = {
            "global_step": self.global_step,
            **metrics,
            "num_processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
        }
        (Path(directory) / "metrics.json").write_text(json.dumps(written, indent=2), encoding="utf-8")
        return written

    def finish(self, end_process_group: bool = True) -> None:
        """Closes the progress bar and the trackers once every rank is here.

        `end_process_group=False` keeps the process group for a later run of the same command (the tokenizer stages
        share one); the caller then destroys it after the last run.
        """
        if self._progress is not None:
            self._progress.close()
        self.accelerator.wait_for_everyone()
        if end_process_group:
            self.accelerator.end_training()
        else:
            for tracker in self.accelerator.trackers:
                tracker.finish()

    def _ema_shard_path(self, checkpoint: Path) -> Path:
        return checkpoint / f"ema_rank{self.accelerator.process_index}.pt"

    def _save_ema_shard(self, checkpoint: Path) -> None:
        torch.save(self.ema.state_dict(), self._ema_shard_path(checkpoint))


def build_accelerator(training: TrainingConfig, project_dir: str | Path) -> Accelerator:
    """The `Accelerator` of a training run, from its `training:` section; seeds everything with `training.seed`."""
    from accelerate import DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration, set_seed

    project_dir = Path(project_dir)
    report_to = training.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=training.mixed_precision,
        log_with=None if report_to in ("", "none") else report_to,
        project_config=ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir / "logs")),
        # Epoch-seeded shuffling makes the data order a function of (seed, epoch), so a resume replays it exactly.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=training.seed),
    )
    set_seed(training.seed)
    return accelerator


def write_training_config(
    directory: str | Path, config: dict[str, Any], run_record: dict[str, Any] | None, accelerator: Accelerator
) -> Path:
    """`<directory>/training_config.json`: the effective config, plus under `run` what the command line decided
    (`cli.load_config_with_overrides`) and the precision accelerate actually runs with."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = {**(run_record or {}), "accelerator_mixed_precision": accelerator.mixed_precision}
    path = directory / "training_config.json"
    path.write_text(json.dumps({**config, "run": to_jsonable(run)}, indent=2))
    return path


def flatten_for_trackers(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> flat `{"a.b": scalar}`, the form tensorboard's hparams accept."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_for_trackers(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
