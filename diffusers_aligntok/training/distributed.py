"""Random draws of a data-parallel step that depend on a sample's place in the global batch, not on the rank.

Training on N processes must compute what one process computes on the same samples: N ranks with a per-rank batch
`b` must produce the parameters of one process with a batch of `N * b`. The data already line up: accelerate's
prepared DataLoader (`use_seedable_sampler=True`, see `trainer.build_accelerator`) and `BucketBatchSampler` both cut
each step's *global batch* of `N * b` samples out of one `(seed, epoch)` order and hand rank `r` its positions
`[r * b, (r + 1) * b)`. The random numbers must line up too. Every rank is seeded identically (`set_seed`), so if each
rank drew the noise, timesteps and dropout masks of its own `b` samples, every rank would draw the *same* tensors: the
ranks' noise would be correlated (the global batch carries the randomness of one local batch, not of `N`) and no
one-process run could match.

`GlobalBatch` fixes this: each draw is made for the whole global batch, on every rank, from that rank's default
generator, and the rank keeps its `b` rows. The generators stay in lockstep (every rank makes the same draws of the
same global sizes in the same order), so all ranks hold the same global tensor and rank `r`'s rows are exactly what a
one-process run with batch `N * b` gives its samples at those positions. With one process the draw is a global batch of
`b`: the same numbers as a plain `torch.randn(b, ...)`, so single-process runs (and their exact resumes) are unchanged.

Gradient accumulation: each micro-batch is its own global micro-batch of `N * b` (rank `r` holds its positions
`[r * b, (r + 1) * b)`), drawn as above. An optimiser step over `k` micro-batches on `N` ranks therefore equals `k`
micro-batches of `N * b` on one process with the same accumulation, not one batch of `k * N * b` (whose draws would
come in another order).

What this relies on:

* every rank makes the same draws, in the same order, with the same local batch size (the samplers above give every
  rank equal batches: the DiT loop drops the last partial batch, the text-to-image sampler yields whole global
  batches only);
* nothing draws from the default generators on some ranks only: sampling done by the main process alone (validation
  grids) must use its own `torch.Generator`.

Each rank draws `N` times its own share; for noise that is the size of the global batch's latents once per step,
small next to the forward pass.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class ProcessLayout(Protocol):
    """What `GlobalBatch.of` reads: an `accelerate.Accelerator` or `accelerate.PartialState` has both."""

    @property
    def process_index(self) -> int: ...

    @property
    def num_processes(self) -> int: ...


@dataclass(frozen=True)
class GlobalBatch:
    """Where this process's local batch sits in the global batch of a (micro-)step: rows `[index * b, (index + 1) * b)`.

    `GlobalBatch()` is the single-process layout, under which every draw is exactly the plain local draw.

    Args:
        process_index (`int`, defaults to 0): This process's rank among the data-parallel processes.
        num_processes (`int`, defaults to 1): The number of data-parallel processes `N`.
    """

    process_index: int = 0
    num_processes: int = 1

    def __post_init__(self) -> None:
        if self.num_processes < 1 or not 0 <= self.process_index < self.num_processes:
            raise ValueError(
                f"process_index={self.process_index} must lie in [0, num_processes={self.num_processes})."
            )

    @classmethod
    def of(cls, state: ProcessLayout) -> "GlobalBatch":
        """The layout of an `Accelerator` (or `PartialState`): its `process_index` and `num_processes`."""
        return cls(process_index=state.process_index, num_processes=state.num_processes)

    def global_size(self, local_batch_size: int) -> int:
        """`N * b`: the size of the global batch when every rank holds `local_batch_size` samples."""
        return self.num_processes * local_batch_size

    def local_rows(self, local_batch_size: int) -> slice:
        """This rank's rows of the global batch: `slice(index * b, (index + 1) * b)`."""
        start = self.process_index * local_batch_size
        return slice(start, start + local_batch_size)

    def draw(self, global_draw: Callable[[int], torch.Tensor], local_batch_size: int) -> torch.Tensor:
        """`global_draw(N * b)[index * b : (index + 1) * b]`: this rank's rows of a draw made for the global batch.

        `global_draw(n)` must return a tensor of `n` rows (dimension 0 is the batch) and draw from generators that
        are in the same state on every rank (the default ones after `set_seed`). With one process it is called with
        `b` and its result returned as is.
        """
        if local_batch_size < 0:
            raise ValueError(f"local_batch_size={local_batch_size} must be non-negative.")
        global_size = self.global_size(local_batch_size)
        values = global_draw(global_size)
        if values.ndim == 0 or values.shape[0] != global_size:
            raise ValueError(
                f"The global draw returned shape {tuple(values.shape)}; expected {global_size} rows first."
            )
        if self.num_processes == 1:
            return values
        # A copy, so the other ranks' rows are freed now rather than kept alive by a view.
        return values[self.local_rows(local_batch_size)].clone()

    def randn(
        self,
        local_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Standard normal noise for this rank's `local_shape` (batch first), cut from a global-batch `torch.randn`."""
        batch, *rest = local_shape
        return self.draw(lambda n: torch.randn((n, *rest), device=device, dtype=dtype, generator=generator), batch)

    def rand(
        self,
        local_shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Uniform `[0, 1)` values for this rank's `local_shape` (batch first), cut from a global-batch `torch.rand`."""
        batch, *rest = local_shape
        return self.draw(lambda n: torch.rand((n, *rest), device=device, dtype=dtype, generator=generator), batch)


SINGLE_PROCESS = GlobalBatch()
