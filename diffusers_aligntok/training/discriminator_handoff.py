"""The discriminator's hand-off between AlignTok's stages: what stage k leaves for stage k + 1, and how it is read.

The paper is silent on the discriminator across stages. Continued LDM / VA-VAE autoencoder training resumes the
discriminator with its optimiser state and keeps the GAN on past its warm-up, so that is our default
(`loss.discriminator_init_from: previous_stage`): a stage that trains a GAN writes `<run>/stage<k>/discriminator/`

    config.json          the discriminator's architecture and how many updates it has had in all stages so far
    model.safetensors    its weights
    optimizer.pt         its AdamW state (moments, step counts), tensors only

and the next stage starts from it instead of from a random discriminator that the decoder would first have to
re-teach (a fresh one also restarts the GAN warm-up, `gan_start_step`, from the new stage's step 0).
"""

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from ..utils import atomic_path
from .config import DiscriminatorConfig, StageConfig
from .stages import stage_output_dir


logger = logging.getLogger(__name__)

DISCRIMINATOR_INIT_CHOICES = ("previous_stage", "fresh")
DISCRIMINATOR_DIR_NAME = "discriminator"
_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class CarriedDiscriminator:
    """A discriminator saved by an earlier stage: its weights, optimiser state and update count."""

    source: Path
    weights: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    num_updates: int

    def load_optimizer_state(self, accelerator: Accelerator, optimizer: torch.optim.Optimizer) -> None:
        """Loads the saved AdamW moments into the (prepared) `optimizer`, keeping this stage's hyperparameters.

        Only the per-parameter state is carried: learning rate, betas and weight decay stay what this stage's config
        says. Called after `accelerator.prepare`, so the state lands on the parameters' device. Under FSDP and
        DeepSpeed the optimiser holds flattened shards, so only the weights are carried and the moments start afresh.
        """
        if self.optimizer_state is None:
            logger.info(f"{self.source} holds no optimiser state; the discriminator's optimiser starts afresh.")
            return
        if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            warnings.warn(
                f"Under {accelerator.distributed_type} only the discriminator's weights are carried from {self.source}; "
                "its optimiser state (sharded there) starts afresh.",
                stacklevel=2,
            )
            return
        current = optimizer.state_dict()
        saved_count = sum(len(group["params"]) for group in self.optimizer_state["param_groups"])
        current_count = sum(len(group["params"]) for group in current["param_groups"])
        if saved_count != current_count:
            raise ValueError(
                f"The optimiser state in {self.source} is for {saved_count} parameters, but this discriminator has "
                f"{current_count}; set loss.discriminator_init_from to 'fresh' or to a matching discriminator."
            )
        optimizer.load_state_dict({"state": self.optimizer_state["state"], "param_groups": current["param_groups"]})


def resolve_discriminator_init(config: StageConfig, stage: int, output_dir: str | Path) -> Path | None:
    """The directory this stage's discriminator starts from, or None for a fresh one.

    `loss.discriminator_init_from` is `"previous_stage"` (default; stage 1 always starts fresh), `"fresh"`, or a
    directory written by an earlier stage (`<run>/stage<k>/discriminator`). With `model.init_from`, the previous
    stage is the run that saved that model: its `discriminator/` lies beside the model's directory.
    """
    choice = config.loss.discriminator_init_from
    if choice == "fresh" or (choice == "previous_stage" and stage == 1):
        return None
    if choice == "previous_stage":
        if config.model.init_from:
            directory = Path(config.model.init_from).parent / DISCRIMINATOR_DIR_NAME
        else:
            directory = stage_output_dir(output_dir, stage - 1) / DISCRIMINATOR_DIR_NAME
        hint = (
            f"Stage {stage} carries the stage-{stage - 1} discriminator on (loss.discriminator_init_from: "
            f"previous_stage), but {directory} holds none: the previous stage trained without a GAN "
            "(loss.gan_weight 0) or was written before discriminators were saved."
        )
    else:
        directory = Path(choice)
        hint = f"loss.discriminator_init_from is {choice!r}, which is not a directory written by a training stage."
    if not (directory / _CONFIG_FILE).is_file() or not (directory / _WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{hint} Set loss.discriminator_init_from to 'fresh' to start a new discriminator (and give it a "
            "gan_start_step warm-up), or to the path of a saved `discriminator/` directory."
        )
    return directory


def load_discriminator_state(directory: str | Path, expected_config: DiscriminatorConfig) -> CarriedDiscriminator:
    """Reads a saved discriminator and checks that its architecture is the one this stage builds."""
    directory = Path(directory)
    saved = json.loads((directory / _CONFIG_FILE).read_text(encoding="utf-8"))
    expected = asdict(expected_config)
    differences = [
        f"{key}: saved {saved['discriminator'].get(key)!r} vs config {value!r}"
        for key, value in expected.items()
        if saved["discriminator"].get(key) != value
    ]
    if differences:
        raise ValueError(
            f"The discriminator in {directory} does not match loss.discriminator ({'; '.join(differences)}). Use the "
            "previous stage's loss.discriminator settings, or set loss.discriminator_init_from to 'fresh'."
        )
    num_updates = int(saved["num_updates"])
    if num_updates == 0:
        warnings.warn(
            f"The discriminator carried from {directory} was never trained (its stage ended before gan_start_step); "
            "this stage meets an untrained discriminator, as with 'fresh'.",
            stacklevel=2,
        )
    optimizer_path = directory / _OPTIMIZER_FILE
    optimizer_state = (
        torch.load(optimizer_path, map_location="cpu", weights_only=True) if optimizer_path.is_file() else None
    )
    return CarriedDiscriminator(directory, load_file(str(directory / _WEIGHTS_FILE)), optimizer_state, num_updates)


def save_discriminator_state(
    accelerator: Accelerator,
    discriminator: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: str | Path,
    discriminator_config: DiscriminatorConfig,
    num_updates: int,
) -> Path:
    """Writes the discriminator for the next stage (every rank calls it; the main process writes).

    Written through `utils.atomic_path` (a temporary directory swapped in), so a kill mid-write leaves no half state.
    """
    directory = Path(directory)
    weights = accelerator.get_state_dict(discriminator)  # gathers FSDP / DeepSpeed shards: a collective call
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if accelerator.is_main_process:
        with atomic_path(directory) as temporary:
            temporary.mkdir()
            save_file(
                {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()},
                str(temporary / _WEIGHTS_FILE),
            )
            if not sharded:
                torch.save(optimizer.state_dict(), temporary / _OPTIMIZER_FILE)
            record = {"discriminator": asdict(discriminator_config), "num_updates": num_updates}
            (temporary / _CONFIG_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    accelerator.wait_for_everyone()
    return directory
