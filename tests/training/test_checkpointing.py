"""The rank-sync fingerprint that every checkpoint records: equal weights give equal fingerprints, any change shows."""

import torch

from diffusers_aligntok.training.checkpointing import parameter_fingerprint


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def test_identical_weights_give_identical_fingerprints():
    assert parameter_fingerprint(_model()) == parameter_fingerprint(_model())


def test_one_changed_value_or_two_swapped_parameters_change_the_fingerprint():
    reference = parameter_fingerprint(_model())
    nudged = _model()
    with torch.no_grad():
        nudged[1].bias[0] += 1e-6  # about the size of one optimiser step's divergence between unsynced ranks
    assert parameter_fingerprint(nudged) != reference

    # Two same-shaped parameters that swapped values: sum and sum of squares agree, the position-weighted sum does not.
    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    second = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        second[0].weight.copy_(first[1].weight)
        second[1].weight.copy_(first[0].weight)
    sums_first, sums_second = parameter_fingerprint(first), parameter_fingerprint(second)
    assert abs(sums_first[0] - sums_second[0]) < 1e-12 and abs(sums_first[1] - sums_second[1]) < 1e-12
    assert sums_first[2] != sums_second[2]
