"""The reconstruction loss L_rec that trains AlignTok's decoder in all three stages.

AlignTok (arXiv 2509.25162; docs/design.md, method table): `L_rec = L1 + 1.0 x perceptual (LPIPS) + adaptive-weight GAN
(PatchGAN-style, hinge)`. The GAN part follows VQGAN / taming-transformers and the LDM and VA-VAE autoencoders: the
generator's GAN loss is scaled so that its gradient at the decoder's last layer is as large as the reconstruction
loss's, times a fixed factor.

`lpips` is imported only inside [`build_perceptual_network`], so importing this module does not need it.
"""

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from .discriminator import hinge_discriminator_loss, hinge_generator_loss


PERCEPTUAL_NETWORKS = ("lpips-vgg", "lpips-vgg-random-trunk")

# Added to the GAN gradient norm in the adaptive weight's denominator (VQGAN's value).
_ADAPTIVE_WEIGHT_EPS = 1e-4

# What lpips' internal `torchvision.models.vgg16(pretrained=...)` call warns about; it is lpips' code, not the user's.
_TORCHVISION_PRETRAINED_WARNINGS = (r".*'pretrained' is deprecated.*", r".*Arguments other than a weight enum.*")


class LPIPSDistance(nn.Module):
    """A frozen LPIPS network mapping `(images, reconstructions)` in `[-1, 1]` to a per-sample distance `(batch,)`.

    Built by [`build_perceptual_network`]. It stays in eval mode even when a parent module calls `.train()` (LPIPS's
    linear heads have dropout, which taming's loss module silently turns on in training), its parameters never require
    gradients, and it computes in float32 with autocast off. Gradients flow to the inputs.

    Attributes:
        name (`str`): The name it was built from, for example `"lpips-vgg"`.
        is_real_metric (`bool`): False for the random-trunk stand-in, whose values are not LPIPS.
    """

    def __init__(self, lpips_model: nn.Module, name: str, is_real_metric: bool):
        super().__init__()
        self.lpips = lpips_model
        self.name = name
        self.is_real_metric = is_real_metric
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPSDistance":
        # A metric, not a trainable part: always eval mode (no dropout).
        return super().train(False)

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=images.device.type, enabled=False):
            distance = self.lpips(images.float(), reconstructions.float())
        return distance.reshape(distance.shape[0])


# Indices of the convolutions in torchvision's `vgg16().features` up to relu5_3, the part LPIPS uses.
_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _read_vgg16_trunk_weights(trunk_weights_path: str) -> dict[str, torch.Tensor]:
    """Reads a torchvision `vgg16` state dict and checks it has the convolutions LPIPS uses (before building LPIPS)."""
    state_dict = torch.load(trunk_weights_path, map_location="cpu", weights_only=True)
    expected = [f"features.{index}.{kind}" for index in _VGG16_CONV_INDICES for kind in ("weight", "bias")]
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise ValueError(
            f"{trunk_weights_path} is not a torchvision vgg16 state dict: it lacks {missing[:4]}"
            f"{' and more' if len(missing) > 4 else ''}. Save one with "
            "`torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), path)`."
        )
    return state_dict


def _load_vgg16_trunk(lpips_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads torchvision `vgg16` weights (`features.N.*` keys) into the LPIPS VGG trunk (`sliceK.N.*` keys)."""
    trunk = lpips_model.net
    # "slice3.10.weight" holds torchvision's "features.10.weight": LPIPS keeps the layer indices.
    trunk.load_state_dict({name: state_dict["features." + name.split(".", 1)[1]] for name in trunk.state_dict()})


def build_perceptual_network(name: str | None, trunk_weights_path: str | None = None) -> nn.Module | None:
    """Builds the perceptual distance of L_rec, or returns None when the perceptual term is off.

    The paper uses LPIPS with weight 1.0 (docs/design.md, "L_rec"); which LPIPS trunk it uses is not stated, and the LDM,
    taming and VA-VAE autoencoders it builds on use the VGG one, so that is what `"lpips-vgg"` is.

    Args:
        name (`str` or `None`):
            `"lpips-vgg"`: real LPIPS (VGG16 trunk with the calibrated linear heads shipped in the lpips wheel). The
            trunk's ImageNet weights download through torchvision on first use unless `trunk_weights_path` is given.
            `"lpips-vgg-random-trunk"`: an offline stand-in for tests and demos, with a randomly initialised VGG16
            trunk.
            It is differentiable and exactly 0 for identical inputs, but it is *not* a perceptual metric; never report
            its numbers as LPIPS.
            `None`: no perceptual network (returns None; pass `perceptual_weight=0` to [`ReconstructionLoss`] too, so
            the config says so).
        trunk_weights_path (`str`, *optional*):
            Local file with a torchvision `vgg16` state dict (`torch.save(vgg16(weights=...).state_dict(), path)`),
            loaded into the trunk instead of downloading. Only for `"lpips-vgg"`.

    Returns:
        A frozen, eval-mode [`LPIPSDistance`] mapping `(images, reconstructions)` in `[-1, 1]` to a `(batch,)`
        float32 distance, or None.
    """
    if name is None:
        if trunk_weights_path is not None:
            raise ValueError("trunk_weights_path was given but the perceptual network name is None; pass 'lpips-vgg'.")
        return None
    if name not in PERCEPTUAL_NETWORKS:
        raise ValueError(f"Unknown perceptual network {name!r}; choose one of {PERCEPTUAL_NETWORKS} or None.")
    if name == "lpips-vgg-random-trunk" and trunk_weights_path is not None:
        raise ValueError(
            "trunk_weights_path loads real VGG16 weights, which would make 'lpips-vgg-random-trunk' real LPIPS under "
            "a misleading name; use name='lpips-vgg' with trunk_weights_path instead."
        )

    # Read the file first, so a wrong file fails before the (slow) network is built.
    trunk_state_dict = _read_vgg16_trunk_weights(trunk_weights_path) if trunk_weights_path is not None else None

    import lpips  # lazy: `import diffusers_aligntok` must not need lpips

    # The random trunk is built first when weights come from a local file, so nothing is downloaded.
    random_trunk = name == "lpips-vgg-random-trunk" or trunk_weights_path is not None
    with warnings.catch_warnings():
        for message in _TORCHVISION_PRETRAINED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        try:
            lpips_model = lpips.LPIPS(net="vgg", pnet_rand=random_trunk, verbose=False)
        except OSError as error:  # urllib's URLError is an OSError
            raise RuntimeError(
                "Could not download the VGG16 trunk weights for 'lpips-vgg' (no network?). Pass trunk_weights_path= a "
                "local torchvision vgg16 state dict, or use 'lpips-vgg-random-trunk' / None for offline smoke runs."
            ) from error
    if trunk_state_dict is not None:
        _load_vgg16_trunk(lpips_model, trunk_state_dict)
    return LPIPSDistance(lpips_model, name=name, is_real_metric=name == "lpips-vgg")


class ReconstructionLoss(nn.Module):
    r"""
    AlignTok's L_rec: L1 + perceptual (LPIPS) + an adaptive-weight hinge GAN term, with the discriminator's hinge loss.

    Paper settings (docs/design.md, "L_rec"): L1 weight 1, LPIPS weight 1.0, a PatchGAN-style discriminator with the hinge
    loss and VQGAN's adaptive weight. The generator loss is

        L1 + perceptual_weight * LPIPS + adaptive_weight * gan_weight * hinge_generator_loss(D(reconstructions))

    with `adaptive_weight = ||grad_last L_nll|| / (||grad_last L_gan|| + 1e-4)`, clamped to `[0, adaptive_weight_max]`
    and detached, where `grad_last` is the gradient at the decoder's last layer (`model.decoder.conv_out.weight`) and
    `L_nll = l1_weight * L1 + perceptual_weight * LPIPS`. Every term is computed in float32 with autocast off, whatever
    the input dtype.

    Reductions: L1 is the mean absolute error over every element (pixels, channels and the batch) and LPIPS the batch
    mean of the per-image distance (LPIPS itself averages over space): taming's VQGAN form. LDM's and VA-VAE's KL
    autoencoders instead sum `|x - x_hat| + LPIPS` over the pixels before the batch mean, which multiplies L1, LPIPS and
    (through the adaptive weight, which is proportional to the L_nll gradient) the GAN term by the same `C * H * W`:
    the generator loss keeps its shape and Adam's steps barely change. Any term added *outside* this loss does not
    scale with it, though: stage 2's `w_sp * L_sp` (a mean over latent elements) is weighed against this per-element
    mean, so `w_sp = 1` here would be `w_sp = C * H * W` (196,608 at 256x256) in LDM's summed form.

    Who does what: call [`generator_loss`] for the autoencoder's step and [`discriminator_loss`] for the
    discriminator's; both take the global step and use [`is_gan_active`] to decide whether the GAN part runs.

    Parameters:
        perceptual_network (`nn.Module`, *optional*):
            From [`build_perceptual_network`]. None turns the perceptual term off (its logged value is then 0).
        l1_weight (`float`, defaults to 1.0): Weight of the mean absolute pixel error (paper: 1).
        perceptual_weight (`float`, defaults to 1.0):
            Weight of the mean LPIPS distance (paper: 1.0). 0 turns the term off and skips the network's forward pass.
        gan_weight (`float`, defaults to 0.5):
            The factor on the adaptively weighted GAN loss (taming's `disc_weight`). The paper does not give it; 0.5 is
            the value of the LDM KL autoencoder configs and VA-VAE, whose decoder and loss AlignTok follows (our
            choice).
            0 turns the GAN off entirely (no discriminator forward, no discriminator updates).
        gan_start_step (`int`, defaults to 50000):
            Global step from which the generator's GAN term is added and the discriminator is trained
            (`global_step >= gan_start_step`); before it the decoder learns from L1 + LPIPS alone. The paper does not
            give it; LDM's KL-f8 autoencoder starts at 50001. Ours is 50000, meant to be set per stage in the training
            configs (a stage that starts from a trained decoder can start at 0).
        adaptive_weight_max (`float`, defaults to 1e4): Upper clamp of the adaptive weight (VQGAN's value).
    """

    def __init__(
        self,
        perceptual_network: nn.Module | None = None,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.5,
        gan_start_step: int = 50_000,
        adaptive_weight_max: float = 1e4,
    ):
        super().__init__()
        for argument, value in (
            ("l1_weight", l1_weight),
            ("perceptual_weight", perceptual_weight),
            ("gan_weight", gan_weight),
            ("adaptive_weight_max", adaptive_weight_max),
        ):
            if value < 0:
                raise ValueError(f"{argument} must be non-negative, got {value}.")
        if perceptual_network is None and perceptual_weight != 0:
            # Allowed (the term is simply off), but said out loud: offline runs must never turn LPIPS off silently.
            warnings.warn(
                f"ReconstructionLoss has no perceptual network, so the perceptual term (perceptual_weight="
                f"{perceptual_weight}) is off. Pass perceptual_weight=0 to say so explicitly, or build one with "
                "build_perceptual_network('lpips-vgg').",
                stacklevel=2,
            )
        self.perceptual_network = perceptual_network
        self.l1_weight = l1_weight
        self.perceptual_weight = perceptual_weight
        self.gan_weight = gan_weight
        self.gan_start_step = gan_start_step
        self.adaptive_weight_max = adaptive_weight_max

    def is_gan_active(self, global_step: int) -> bool:
        """Whether the GAN part (generator term and discriminator updates) runs at this global step."""
        return self.gan_weight > 0 and int(global_step) >= self.gan_start_step

    def _adaptive_weight(
        self, nll_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer_weight: torch.Tensor | None
    ) -> torch.Tensor:
        one = torch.ones((), device=gan_loss.device, dtype=torch.float32)
        if (
            last_layer_weight is None
            or not torch.is_grad_enabled()
            or not (nll_loss.requires_grad and gan_loss.requires_grad)
        ):
            # No graph to measure (validation under no_grad) or adaptive weighting not asked for: weight 1.
            return one
        nll_grad = gan_grad = None
        if last_layer_weight.requires_grad:
            (nll_grad,) = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True, allow_unused=True)
            (gan_grad,) = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True, allow_unused=True)
        if nll_grad is None or gan_grad is None:
            # The losses have a graph but the given tensor is not in it: almost surely the wrong tensor (an EMA copy,
            # a frozen layer), so say so rather than train with an unintended weight silently.
            warnings.warn(
                "last_layer_weight is not on the gradient path of the reconstruction and GAN losses; the adaptive GAN "
                "weight falls back to 1.0. Pass the trained model's `decoder.conv_out.weight`.",
                stacklevel=3,
            )
            return one
        weight = nll_grad.float().norm() / (gan_grad.float().norm() + _ADAPTIVE_WEIGHT_EPS)
        return weight.clamp(0.0, self.adaptive_weight_max).detach()

    def generator_loss(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        discriminator: nn.Module | None = None,
        global_step: int = 0,
        last_layer_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The autoencoder's loss: L1 + perceptual + (from `gan_start_step`) the adaptively weighted GAN term.

        Args:
            images (`torch.Tensor`): Targets `(batch, C, H, W)` in `[-1, 1]`.
            reconstructions (`torch.Tensor`): Decoder outputs, same shape, with their graph.
            discriminator (`nn.Module`, *optional*):
                The discriminator; None leaves the GAN term out at every step. Its parameters receive gradients from
                this loss too: zero the discriminator's gradients before its own backward pass (as usual with separate
                optimizers) and step only the autoencoder's optimizer with this loss.
            global_step (`int`): The optimisation step; the GAN term is added when [`is_gan_active`].
            last_layer_weight (`torch.Tensor`, *optional*):
                The decoder's last layer weight, `model.decoder.conv_out.weight`, for the adaptive weight. The adaptive
                weight falls back to 1.0 when it is None or when there is no graph (under `torch.no_grad()`, for
                validation); it also falls back, with a warning, when the tensor is not on the losses' gradient path.

        Returns:
            `(loss, logs)`: the float32 scalar loss, and detached float32 scalars `"loss/l1"`, `"loss/perceptual"`
            (unweighted mean distance), `"loss/gan_generator"` (unweighted hinge loss), `"gan/adaptive_weight"`
            (before `gan_weight`) and `"loss/generator_total"`, every step, with 0 for terms that are off.
        """
        if images.shape != reconstructions.shape:
            raise ValueError(
                f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} must have one shape."
            )
        images = images.float()
        reconstructions = reconstructions.float()
        zero = torch.zeros((), device=reconstructions.device, dtype=torch.float32)

        with torch.autocast(device_type=reconstructions.device.type, enabled=False):
            l1_loss = F.l1_loss(reconstructions, images)
            if self.perceptual_network is not None and self.perceptual_weight > 0:
                perceptual_loss = self.perceptual_network(images, reconstructions).float().mean()
            else:
                perceptual_loss = zero
            nll_loss = self.l1_weight * l1_loss + self.perceptual_weight * perceptual_loss

            if discriminator is not None and self.is_gan_active(global_step):
                gan_loss = hinge_generator_loss(discriminator(reconstructions))
                adaptive_weight = self._adaptive_weight(nll_loss, gan_loss, last_layer_weight)
                total_loss = nll_loss + adaptive_weight * self.gan_weight * gan_loss
            else:
                gan_loss = adaptive_weight = zero
                total_loss = nll_loss

        logs = {
            "loss/l1": l1_loss,
            "loss/perceptual": perceptual_loss,
            "loss/gan_generator": gan_loss,
            "gan/adaptive_weight": adaptive_weight,
            "loss/generator_total": total_loss,
        }
        return total_loss, {key: value.detach().float() for key, value in logs.items()}

    def discriminator_loss(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        discriminator: nn.Module,
        global_step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's hinge loss `0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))`.

        Real images and (detached) reconstructions go through the discriminator as one concatenated batch, so a
        DDP-wrapped discriminator sees one forward pass per backward pass. With `norm="group"` or `"none"` this equals
        two separate calls; with `norm="batch"` real and fake share batch statistics.

        Before `gan_start_step` (or with `gan_weight=0`) nothing runs and the loss is a constant zero *without* a
        gradient path: the caller must skip the discriminator's backward pass and optimizer step then, for example
        `if loss_fn.is_gan_active(step): accelerator.backward(disc_loss); disc_optimizer.step()`.

        Returns:
            `(loss, logs)`: the float32 scalar loss and detached float32 scalars `"loss/discriminator"`,
            `"gan/logits_real"` and `"gan/logits_fake"` (mean logits), zeros before the GAN starts.
        """
        if images.shape != reconstructions.shape:
            raise ValueError(
                f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} must have one shape."
            )
        if not self.is_gan_active(global_step):
            zero = torch.zeros((), device=images.device, dtype=torch.float32)
            return zero, {"loss/discriminator": zero, "gan/logits_real": zero, "gan/logits_fake": zero}

        batch_size = images.shape[0]
        # detach(): the discriminator's loss must never reach the autoencoder, whatever the caller passes.
        logits = discriminator(torch.cat([images.float(), reconstructions.detach().float()], dim=0)).float()
        logits_real, logits_fake = logits[:batch_size], logits[batch_size:]
        with torch.autocast(device_type=images.device.type, enabled=False):
            loss = hinge_discriminator_loss(logits_real, logits_fake)
        logs = {
            "loss/discriminator": loss.detach(),
            "gan/logits_real": logits_real.detach().mean(),
            "gan/logits_fake": logits_fake.detach().mean(),
        }
        return loss, logs
