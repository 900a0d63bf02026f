"""The offline stand-ins: every name the library accepts is registered, labelled as not real, and deterministic."""

import re
from pathlib import Path

import pytest
import torch

from diffusers_aligntok import standins


PACKAGE = Path(standins.__file__).parent


def test_every_standin_name_the_library_accepts_is_in_the_registry():
    # Names like "random-...-standin", "...-random-trunk", "flux-vae-random" written anywhere in the package.
    pattern = re.compile(
        r'"((?:random-[a-z-]+-standin)|(?:[a-z-]+-random-trunk)|(?:flux-vae-random)|(?:tiny-random))"'
    )
    used = {name for path in PACKAGE.rglob("*.py") for name in pattern.findall(path.read_text())}
    assert used, "the scan found no stand-in names; the pattern is out of date"
    assert used <= set(standins.STANDINS), used - set(standins.STANDINS)
    assert all(not standin.is_real_metric for standin in standins.STANDINS.values())


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match="random-inception-standin"):
        standins.check_standin_name("inception")


def test_builders_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = standins.build_random_flux_vae(seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    second = standins.build_random_flux_vae(seed=0)
    assert torch.equal(first.decoder.conv_out.weight, second.decoder.conv_out.weight)
    images = torch.rand(2, 3, 299, 299) * 255
    a, b = standins.RandomInceptionStandIn(seed=0), standins.RandomInceptionStandIn(seed=0)
    assert torch.equal(a(images), b(images)) and a(images).shape == (2, 32)
