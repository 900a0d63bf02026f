"""The shared `Trainer` on its own: step cadences, the epoch/resume arithmetic of its batches, the EMA weight swap,
the resume compatibility check and `metrics.json`, with a two-parameter model and a list dataset."""

import json
from pathlib import Path

import pytest
import torch

from diffusers_aligntok.training.config import OptimizerConfig, TrainingConfig
from diffusers_aligntok.training.trainer import Trainer, build_adamw


def _trainer(tmp_path: Path, **training) -> Trainer:
    defaults = {"mixed_precision": "no", "report_to": "none", "max_train_steps": 7, "checkpoints_total_limit": None}
    return Trainer(TrainingConfig(**{**defaults, **training}), tmp_path, name="test")


def _prepared_dataloader(trainer: Trainer, num_items: int = 10, batch_size: int = 2) -> torch.utils.data.DataLoader:
    items = torch.arange(num_items)
    dataloader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False)
    return trainer.accelerator.prepare(dataloader)


def test_due_fires_every_n_steps_and_at_the_final_step(tmp_path):
    trainer = _trainer(tmp_path, max_train_steps=7)
    fired = []
    for step in range(1, 8):
        trainer.global_step = step
        if trainer.due(3):
            fired.append(step)
    assert fired == [3, 6, 7]
    assert trainer.done


def test_micro_batches_run_to_the_last_step_and_a_resume_continues_mid_epoch(tmp_path):
    # 10 items at batch 2: 5 optimiser steps an epoch, so 7 steps cross into epoch 1.
    trainer = _trainer(tmp_path, max_train_steps=7)
    dataloader, epochs = _prepared_dataloader(trainer), []
    seen = []
    for batch in trainer.micro_batches(dataloader, epoch_hooks=[epochs.append]):
        seen.append(batch.tolist())
        trainer.finish_optimizer_step()
    assert trainer.global_step == 7 and epochs == [0, 1]
    assert seen == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [0, 1], [2, 3]]

    resumed = _trainer(tmp_path / "resumed", max_train_steps=7)
    resumed.global_step = 3  # as `resume` sets it from a checkpoint
    rest = []
    for batch in resumed.micro_batches(_prepared_dataloader(resumed)):
        rest.append(batch.tolist())
        resumed.finish_optimizer_step()
    assert rest == seen[3:]


def test_ema_weights_swap_in_the_average_and_restore_the_training_weights_exactly(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=0.5)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = trainer.track_ema(model)
    for _ in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        trainer.finish_optimizer_step()
    training_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with trainer.ema_weights(model):
        for parameter, shadow in zip(model.parameters(), ema.shadow_params):
            assert torch.equal(parameter, shadow)
        assert not torch.equal(model.weight, training_weights["weight"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, training_weights[name]), name

    # Restored on an error inside the block too; the default model is the tracked one.
    with pytest.raises(RuntimeError, match="validation failed"), trainer.ema_weights():
        raise RuntimeError("validation failed")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, training_weights[name]), name


def _adamw_reference(weight, gradients, lr, betas, eps, weight_decay):
    """AdamW (Loshchilov & Hutter, decoupled weight decay) written out, one step per gradient."""
    weight, first, second = (
        weight.clone().double(),
        torch.zeros_like(weight).double(),
        torch.zeros_like(weight).double(),
    )
    for step, gradient in enumerate(gradients, start=1):
        gradient = gradient.double()
        weight = weight * (1 - lr * weight_decay)
        first = betas[0] * first + (1 - betas[0]) * gradient
        second = betas[1] * second + (1 - betas[1]) * gradient**2
        first_hat, second_hat = first / (1 - betas[0] ** step), second / (1 - betas[1] ** step)
        weight = weight - lr * first_hat / (second_hat.sqrt() + eps)
    return weight


@pytest.mark.parametrize("fused_adamw", [True, False])
def test_adamw_is_fused_by_default_and_either_implementation_computes_adamw(fused_adamw):
    config = OptimizerConfig(
        learning_rate=1e-2,
        adam_beta1=0.8,
        adam_beta2=0.95,
        adam_epsilon=1e-6,
        weight_decay=0.1,
        fused_adamw=fused_adamw,
    )
    assert OptimizerConfig().fused_adamw
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 5))
    initial = weight.detach().clone()
    gradients = [torch.randn(4, 5) for _ in range(3)]
    optimizer = build_adamw([weight], config)
    assert optimizer.defaults["fused"] is (True if fused_adamw else None)
    assert optimizer.defaults["foreach"] is (None if fused_adamw else True)
    for gradient in gradients:
        weight.grad = gradient.clone()
        optimizer.step()
    expected = _adamw_reference(initial, gradients, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    torch.testing.assert_close(weight.detach().double(), expected, rtol=0, atol=1e-6)


def test_ema_follows_diffusers_decay_schedule_step_by_step(tmp_path):
    # EMAModel's schedule without warm-up: no average at the first step, then min(decay, (1 + t) / (10 + t)) with
    # t = step - 1, i.e. shadow <- d * shadow + (1 - d) * weight.
    trainer = _trainer(tmp_path, ema_decay=0.3)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    trainer.track_ema(model)
    expected = [parameter.detach().clone() for parameter in model.parameters()]
    for step in range(1, 5):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        trainer.finish_optimizer_step()
        decay = 0.0 if step == 1 else min(0.3, step / (9 + step))
        expected = [
            decay * shadow + (1 - decay) * weight.detach() for shadow, weight in zip(expected, model.parameters())
        ]
    for shadow, reference in zip(trainer.ema.shadow_params, expected):
        torch.testing.assert_close(shadow, reference, rtol=0, atol=1e-6)


def test_ema_weights_without_ema_leave_the_model_alone(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=None)
    model = torch.nn.Linear(3, 2)
    assert trainer.track_ema(model) is None
    before = model.weight.clone()
    with trainer.ema_weights(model):
        assert torch.equal(model.weight, before)


def test_resume_refuses_a_checkpoint_of_another_configuration_naming_the_difference(tmp_path):
    first = _trainer(tmp_path, max_train_steps=4)
    assert first.resume("latest", training_state={"model_config": {"width": 4}, "stage": 1}) == 0
    first.global_step = 2
    first.save_checkpoint(synchronized_models={})
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "training_state.json").is_file()

    mismatched = _trainer(tmp_path, max_train_steps=4)
    with pytest.raises(ValueError, match=r"model_config\.width: checkpoint 4 vs now 8") as error:
        mismatched.resume("latest", training_state={"model_config": {"width": 8}, "stage": 1})
    assert "start a new --output_dir" in str(error.value)
    assert mismatched.global_step == 0

    matching = _trainer(tmp_path, max_train_steps=4)
    assert matching.resume("latest", training_state={"model_config": {"width": 4}, "stage": 1}) == 2
    assert matching.global_step == 2


def test_log_and_metrics_record_this_run(tmp_path):
    trainer = _trainer(tmp_path, max_train_steps=2)
    trainer.start_run("test", {"training": {"seed": 0}}, run_record={"command_line_overrides": {}})
    for _ in range(2):
        trainer.finish_optimizer_step()
        trainer.log({"loss/total": float(trainer.global_step)})
    written = trainer.write_metrics(tmp_path, {"loss_curve": trainer.logged})
    trainer.finish()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == written
    assert on_disk["global_step"] == 2 and on_disk["num_processes"] == 1 and on_disk["mixed_precision"] == "no"
    assert on_disk["loss_curve"] == [{"step": 1, "loss/total": 1.0}, {"step": 2, "loss/total": 2.0}]
    recorded = json.loads((tmp_path / "training_config.json").read_text())
    assert recorded["training"] == {"seed": 0} and recorded["run"]["accelerator_mixed_precision"] == "no"


def test_recipe_configs_extend_the_shared_schema_with_their_own_defaults():
    from diffusers_aligntok.training.config import OptimizerConfig, StageConfig
    from diffusers_aligntok.training.dit_config import DiTConfig
    from diffusers_aligntok.training.t2i_config import T2IConfig

    stage, dit, t2i = StageConfig(), DiTConfig(), T2IConfig()
    for config in (stage, dit, t2i):
        assert isinstance(config.optimizer, OptimizerConfig) and isinstance(config.training, TrainingConfig)
    # The defaults each recipe had before the schema was shared.
    assert (stage.optimizer.learning_rate, stage.optimizer.adam_beta2, stage.optimizer.lr_scheduler) == (
        1.0e-4,
        0.999,
        "constant_with_warmup",
    )
    assert (stage.training.train_batch_size, stage.training.ema_decay, stage.training.log_every_steps) == (8, None, 10)
    assert (dit.optimizer.learning_rate, dit.optimizer.adam_beta2, dit.optimizer.lr_scheduler) == (
        2.0e-4,
        0.95,
        "constant",
    )
    assert (dit.training.train_batch_size, dit.training.ema_decay, dit.training.checkpointing_steps) == (
        128,
        0.9999,
        5000,
    )
    assert (t2i.optimizer.learning_rate, t2i.optimizer.lr_warmup_steps, t2i.optimizer.adam_beta2) == (
        1.0e-4,
        1000,
        0.95,
    )
    assert (t2i.training.train_batch_size, t2i.training.gradient_checkpointing, t2i.training.allow_tf32) == (
        16,
        True,
        True,
    )
    assert {config.optimizer.adam_epsilon for config in (stage, dit, t2i)} == {1.0e-8}
