"""`distributed.GlobalBatch`: per-rank slices of global-batch draws, and the training losses' draws through it.

Ranks are simulated in one process: every rank starts from the same seed (as `set_seed` leaves real ranks), draws
with its own `GlobalBatch(rank, N)`, and the slices must tile the one-process draw of the global batch exactly.
"""

import pytest
import torch
from diffusers import AutoencoderKL

from diffusers_aligntok import LightningDiTTransformer2DModel
from diffusers_aligntok.training.distributed import SINGLE_PROCESS, GlobalBatch
from diffusers_aligntok.training.dit_config import FlowMatchingConfig
from diffusers_aligntok.training.flow_matching import flow_matching_loss, label_dropout_mask, sample_sigmas
from diffusers_aligntok.training.t2i_config import T2IFlowConfig
from diffusers_aligntok.training.t2i_loop import _conditioning, _sample_posterior, drop_captions, sample_flux_sigmas


SEED = 1234


def _per_rank(num_processes: int, draw):
    """`draw(GlobalBatch(rank, N))` for every rank, each from the same seeded state, and the states they end in."""
    results, states = [], []
    for rank in range(num_processes):
        torch.manual_seed(SEED)
        results.append(draw(GlobalBatch(rank, num_processes)))
        states.append(torch.get_rng_state())
    return results, states


@pytest.mark.parametrize("num_processes", [1, 2, 3])
@pytest.mark.parametrize("kind", ["randn", "rand"])
def test_rank_slices_tile_the_one_process_draw_of_the_global_batch(num_processes, kind):
    local = (5, 3, 4, 4)
    slices, states = _per_rank(num_processes, lambda batch: getattr(batch, kind)(local, dtype=torch.float64))
    torch.manual_seed(SEED)
    expected = getattr(torch, kind)((num_processes * local[0], *local[1:]), dtype=torch.float64)
    assert all(piece.shape == local for piece in slices)
    assert torch.equal(torch.cat(slices), expected)
    # Every rank's generator ends where the one-process run's does: the next draws stay in lockstep.
    assert all(torch.equal(state, torch.get_rng_state()) for state in states)
    if num_processes > 1:  # the ranks' noise is not one tensor repeated (what per-rank local draws would give)
        assert not torch.equal(slices[0], slices[1])


def test_one_process_draws_are_the_plain_local_draws():
    """With one process nothing changes: the same numbers as before the global-batch helpers existed."""
    torch.manual_seed(SEED)
    latents = torch.zeros(6, 2, 3, 3)
    ours = (
        SINGLE_PROCESS.randn(latents.shape),
        SINGLE_PROCESS.rand((6,)),
        sample_sigmas(FlowMatchingConfig(), 6, "cpu"),
    )
    torch.manual_seed(SEED)
    plain = (torch.randn_like(latents), torch.rand(6), torch.sigmoid(torch.normal(0.0, 1.0, size=(6,))))
    for mine, theirs in zip(ours, plain):
        assert torch.equal(mine, theirs)


def test_generic_draw_slices_rows_and_checks_the_global_size():
    batch = GlobalBatch(process_index=2, num_processes=4)
    assert batch.global_size(3) == 12 and batch.local_rows(3) == slice(6, 9)
    assert batch.draw(lambda n: torch.arange(n), 3).tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="expected 12 rows"):
        batch.draw(lambda n: torch.arange(3), 3)
    with pytest.raises(ValueError, match="process_index"):
        GlobalBatch(process_index=2, num_processes=2)

    class State:  # an Accelerator or PartialState stand-in
        process_index, num_processes = 1, 2

    assert GlobalBatch.of(State()) == GlobalBatch(1, 2)


@pytest.mark.parametrize("num_processes", [2, 3])
def test_sigmas_and_caption_dropout_are_global_batch_draws(num_processes):
    local, dit_flow, flux_flow = 4, FlowMatchingConfig(timestep_shift=2.0), T2IFlowConfig()
    dit_sigmas, _ = _per_rank(num_processes, lambda batch: sample_sigmas(dit_flow, local, "cpu", batch))
    flux_sigmas, _ = _per_rank(num_processes, lambda batch: sample_flux_sigmas(flux_flow, local, 64, "cpu", batch))
    torch.manual_seed(SEED)
    assert torch.equal(torch.cat(dit_sigmas), sample_sigmas(dit_flow, num_processes * local, "cpu"))
    torch.manual_seed(SEED)
    assert torch.equal(torch.cat(flux_sigmas), sample_flux_sigmas(flux_flow, num_processes * local, 64, "cpu"))

    embeds, pooled = torch.randn(num_processes * local, 7, 5), torch.randn(num_processes * local, 5)
    empty_embeds, empty_pooled = torch.zeros(7, 5), torch.zeros(5)

    def drop_this_ranks_captions(batch: GlobalBatch):
        rows = batch.local_rows(local)
        return drop_captions(embeds[rows], pooled[rows], empty_embeds, empty_pooled, 0.5, batch)

    dropped, _ = _per_rank(num_processes, drop_this_ranks_captions)
    torch.manual_seed(SEED)
    expected = drop_captions(embeds, pooled, empty_embeds, empty_pooled, 0.5)
    assert torch.equal(torch.cat([embeds for embeds, _ in dropped]), expected[0])
    assert torch.equal(torch.cat([pooled for _, pooled in dropped]), expected[1])
    assert 0 < int((expected[1] == 0).all(dim=1).sum()) < num_processes * local  # some dropped, some kept


def test_stochastic_vae_posterior_samples_are_global_batch_draws():
    """The FLUX-VAE arm's posterior sample, live (`_sample_posterior`) and from a cache with `latent_std`."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        scaling_factor=0.5,
        shift_factor=0.1,
    ).eval()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        distribution = vae.encode(images).latent_dist
    torch.manual_seed(SEED)
    ours = _sample_posterior(distribution, SINGLE_PROCESS)
    torch.manual_seed(SEED)
    assert torch.equal(ours, distribution.sample())  # one process: diffusers' own sample, number for number
    with torch.no_grad():
        halves = [vae.encode(images[rows]).latent_dist for rows in (slice(0, 2), slice(2, 4))]
    live, _ = _per_rank(2, lambda batch: _sample_posterior(halves[batch.process_index], batch))
    torch.manual_seed(SEED)
    torch.testing.assert_close(torch.cat(live), _sample_posterior(distribution, SINGLE_PROCESS), rtol=0, atol=1e-6)

    batch = {
        "latent_mean": distribution.mean,
        "latent_std": distribution.std,
        "prompt_embeds": torch.zeros(4, 3, 2),
        "pooled_prompt_embeds": torch.zeros(4, 2),
    }

    def this_ranks_latents(gb: GlobalBatch) -> torch.Tensor:
        local = {key: value[gb.local_rows(2)] for key, value in batch.items()}
        return _conditioning(local, vae, None, "cpu", torch.float32, {}, gb)[0]

    cached, _ = _per_rank(2, this_ranks_latents)
    torch.manual_seed(SEED)
    assert torch.equal(torch.cat(cached), _conditioning(batch, vae, None, "cpu", torch.float32, {})[0])


def test_dit_loss_on_simulated_ranks_averages_to_the_one_process_loss_and_gradient():
    """What DDP computes (the mean of the ranks' losses and gradients) equals one process on the global batch, with
    label dropout on; with every rank drawing for its local batch alone (the old behaviour) it does not."""
    torch.manual_seed(0)
    model = LightningDiTTransformer2DModel.from_preset(
        "tiny", in_channels=4, sample_size=4, num_classes=10, class_dropout_prob=0.5
    ).train()
    config = FlowMatchingConfig(velocity_cosine_weight=1.0)
    latents, labels = torch.randn(8, 4, 4, 4), torch.randint(0, 10, (8,))

    def loss_and_grad(rows, batch):
        model.zero_grad()
        torch.manual_seed(SEED)
        loss, _ = flow_matching_loss(model, latents[rows], labels[rows], config, batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    reference_loss, reference_grad = loss_and_grad(slice(None), SINGLE_PROCESS)
    ranks = [loss_and_grad(GlobalBatch(rank, 2).local_rows(4), GlobalBatch(rank, 2)) for rank in range(2)]
    torch.testing.assert_close((ranks[0][0] + ranks[1][0]) / 2, reference_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close((ranks[0][1] + ranks[1][1]) / 2, reference_grad, rtol=1e-5, atol=1e-7)
    old = [loss_and_grad(rows, SINGLE_PROCESS) for rows in (slice(0, 4), slice(4, 8))]
    assert not torch.allclose((old[0][1] + old[1][1]) / 2, reference_grad, rtol=1e-3, atol=1e-5)

    # The label-dropout mask is drawn only where the embedder would draw it.
    torch.manual_seed(SEED)
    mask = label_dropout_mask(model, 8, "cpu")
    torch.manual_seed(SEED)
    assert torch.equal(mask, torch.rand(8) < 0.5)
    assert label_dropout_mask(model.eval(), 8, "cpu") is None
