"""The contract every model of the package keeps with diffusers, as one mixin (diffusers' `ModelTesterMixin` pattern).

A test class for a model inherits `ModelContractTests` and says how to build a small seeded model, its inputs and the
output tensor to compare; it then gets the behaviours a diffusers user relies on without restating them: save/load
(plain, sharded and as a dtype variant) is exact, `from_config` rebuilds the architecture, eval outputs are
deterministic and per sample (a batch equals its samples one at a time), `.to(dtype)` casts every parameter and stays
finite, and gradient checkpointing recomputes without changing a gradient. Model-specific behaviour (tiling of the
autoencoder, label dropout of the DiT, ...) stays in each model's own test file.
"""

import copy
import json
from typing import Any

import pytest
import torch
from diffusers import ModelMixin


def public_config(model: ModelMixin) -> dict[str, Any]:
    """The config as `save_pretrained` writes it (tuples as lists), without bookkeeping keys (`_class_name`,
    `_name_or_path`, `_diffusers_version`, ...)."""
    return {key: value for key, value in json.loads(model.to_json_string()).items() if not key.startswith("_")}


def _cpu_supports(dtype: torch.dtype) -> bool:
    try:
        torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, dtype=dtype), torch.ones(1, 1, 1, 1, dtype=dtype))
    except (RuntimeError, NotImplementedError):
        return False
    return True


class ModelContractTests:
    """Mixed into a pytest class; the subclass defines the four members below."""

    model_class: type[ModelMixin]

    def build_model(self) -> ModelMixin:
        """A small seeded model in eval mode, with no layer left at an all-zero initialisation (an output of exact
        zeros would make every comparison below pass trivially) and no randomness in its train-mode forward."""
        raise NotImplementedError

    def model_inputs(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded inputs for `model_output`; every tensor has the batch in dimension 0."""
        raise NotImplementedError

    def model_output(self, model: ModelMixin, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tensor of a forward pass that the contract compares."""
        raise NotImplementedError

    # ---- save / load ----

    def _assert_same_model(self, loaded: ModelMixin, model: ModelMixin) -> None:
        assert type(loaded) is type(model)
        assert public_config(loaded) == public_config(model)
        expected = model.state_dict()
        actual = loaded.state_dict()
        assert actual.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(actual[name].to(tensor.dtype), tensor), name

    def test_save_pretrained_round_trip_is_exact(self, tmp_path):
        model = self.build_model()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file() and (tmp_path / "config.json").is_file()
        loaded = self.model_class.from_pretrained(tmp_path).eval()
        self._assert_same_model(loaded, model)
        inputs = self.model_inputs()
        with torch.no_grad():
            assert torch.equal(self.model_output(loaded, inputs), self.model_output(model, inputs))

    def test_sharded_round_trip(self, tmp_path):
        model = self.build_model()
        model.save_pretrained(tmp_path, max_shard_size="50KB")
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("diffusion_pytorch_model-*.safetensors"))) > 1
        self._assert_same_model(self.model_class.from_pretrained(tmp_path), model)

    def test_bfloat16_variant_round_trip(self, tmp_path):
        # How half-precision weights are published on the Hub: `variant="bf16"` beside (or instead of) float32.
        model = self.build_model().to(torch.bfloat16)
        model.save_pretrained(tmp_path, variant="bf16")
        assert (tmp_path / "diffusion_pytorch_model.bf16.safetensors").is_file()
        loaded = self.model_class.from_pretrained(tmp_path, variant="bf16", torch_dtype=torch.bfloat16)
        assert all(parameter.dtype == torch.bfloat16 for parameter in loaded.parameters())
        self._assert_same_model(loaded, model)

    def test_from_config_rebuilds_the_architecture(self):
        model = self.build_model()
        rebuilt = self.model_class.from_config(model.config)
        assert public_config(rebuilt) == public_config(model)
        assert {name: tensor.shape for name, tensor in rebuilt.state_dict().items()} == {
            name: tensor.shape for name, tensor in model.state_dict().items()
        }

    # ---- outputs ----

    @torch.no_grad()
    def test_eval_outputs_are_deterministic_and_per_sample(self):
        model = self.build_model()
        inputs = self.model_inputs(batch_size=3)
        batched = self.model_output(model, inputs)
        assert torch.isfinite(batched).all() and batched.abs().max() > 0
        assert torch.equal(batched, self.model_output(model, inputs))
        # No statistic is shared across the batch (GroupNorm, attention and adaLN are per sample).
        for index in range(3):
            single = self.model_output(model, {name: value[index : index + 1] for name, value in inputs.items()})
            torch.testing.assert_close(single, batched[index : index + 1], rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
    @torch.no_grad()
    def test_to_dtype_casts_every_parameter_and_stays_finite(self, dtype):
        if not _cpu_supports(dtype):
            pytest.skip(f"this CPU build of torch cannot run {dtype} convolutions")
        model = self.build_model()
        expected = self.model_output(model, self.model_inputs())
        model.to(dtype)
        assert model.dtype == dtype and all(parameter.dtype == dtype for parameter in model.parameters())
        # Floating inputs in the model's dtype, as a diffusers pipeline passes them (`latents.to(transformer.dtype)`).
        inputs = {
            name: value.to(dtype) if value.is_floating_point() else value
            for name, value in self.model_inputs().items()
        }
        output = self.model_output(model, inputs)
        assert output.dtype == dtype and torch.isfinite(output).all()
        # Half precision changes the numbers, not the function: within a few percent of the float32 output's scale.
        error = (output.float() - expected).abs().mean() / expected.abs().mean()
        assert error < 0.05, f"{dtype} output differs from float32 by {error:.3f} of its mean magnitude"

    # ---- training ----

    def test_gradient_checkpointing_recomputes_without_changing_gradients(self):
        model = self.build_model().train()
        checkpointed = copy.deepcopy(model)
        checkpointed.enable_gradient_checkpointing()
        assert checkpointed.is_gradient_checkpointing and not model.is_gradient_checkpointing
        inputs = self.model_inputs()

        def gradients(network: ModelMixin) -> dict[str, torch.Tensor]:
            network.zero_grad()
            self.model_output(network, inputs).square().mean().backward()
            return {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}

        expected, actual = gradients(model), gradients(checkpointed)
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        assert set(expected) == trainable, "some trainable parameter received no gradient"
        assert actual.keys() == expected.keys()
        for name, gradient in expected.items():
            torch.testing.assert_close(actual[name], gradient, rtol=1e-4, atol=1e-5, msg=name)
        checkpointed.disable_gradient_checkpointing()
        assert not checkpointed.is_gradient_checkpointing
