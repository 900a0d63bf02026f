"""Optimiser and EMA step time: the trainer's fused AdamW and foreach EMA against torch's and diffusers' defaults.

`training/trainer.py` builds AdamW with `fused=True` (`optimizer.fused_adamw`) and diffusers' `EMAModel` with
`foreach=True`. This benchmark times one `optimizer.step()` + `zero_grad()` and one `EMAModel.step()` on the
parameter shapes of the models we train, for:

- AdamW: torch's default (`torch.optim.AdamW(params)`: a per-tensor loop on the CPU, foreach on CUDA, which is what
  the recipes ran before), foreach, and fused (the trainer's `build_adamw`);
- EMA: diffusers' default (`EMAModel(params)`, two kernels per tensor) and foreach (the trainer's `build_ema`).

The optimiser cost depends only on the parameter shapes, so each model is built on the meta device and its parameters
allocated as plain tensors with random gradients. The candidates share the parameters, are timed round-robin (the
first rotating) and each row carries the per-round ratio to the default, median with min-max.

Usage:
    python benchmarks/optimizer_speed.py            # tokenizer (DINOv2-L preset) and LightningDiT-B, ~2 minutes
    python benchmarks/optimizer_speed.py --quick    # tiny models, seconds
    python benchmarks/optimizer_speed.py --models dit_XL --device cuda
"""

import argparse
import time
from pathlib import Path

import torch
from benchmark_utils import (
    available_memory_bytes,
    machine_description,
    machine_line,
    markdown_table,
    ratio_summary,
    time_alternately,
    write_results,
)
from diffusers.training_utils import EMAModel

from diffusers_aligntok import AlignedAutoencoderKL, LightningDiTTransformer2DModel
from diffusers_aligntok.training.config import OptimizerConfig
from diffusers_aligntok.training.trainer import build_adamw, build_ema


MODELS = {
    "tokenizer_L": (
        "AlignedAutoencoderKL aligntok-dinov2-large-f16d32",
        lambda: _tokenizer("aligntok-dinov2-large-f16d32"),
    ),
    "dit_B": ("LightningDiT-B/1", lambda: LightningDiTTransformer2DModel.from_preset("B")),
    "dit_XL": ("LightningDiT-XL/1", lambda: LightningDiTTransformer2DModel.from_preset("XL")),
    "tiny": ("AlignedAutoencoderKL tiny", lambda: _tokenizer("tiny")),
}
DEFAULT_MODELS = ["tokenizer_L", "dit_B"]
# Resident fp32 tensors per parameter: weight, gradient, two moments per AdamW candidate, a shadow per EMA candidate
# and foreach EMA's temporary difference.
RESIDENT_COPIES = 2 + 2 * 3 + 2 + 1


def _tokenizer(preset: str) -> torch.nn.Module:
    return AlignedAutoencoderKL.from_preset(preset)


def parameters_like(name: str, device: torch.device) -> list[torch.nn.Parameter]:
    """Parameters with the shapes of `name`'s model, random values and random gradients."""
    with torch.device("meta"):
        shapes = [parameter.shape for parameter in MODELS[name][1]().parameters()]
    generator = torch.Generator(device).manual_seed(0)
    parameters = []
    for shape in shapes:
        parameter = torch.nn.Parameter(torch.randn(shape, device=device, generator=generator))
        parameter.grad = torch.randn(shape, device=device, generator=generator) * 1e-3
        parameters.append(parameter)
    return parameters


def measure(name: str, args) -> dict:
    parameters = parameters_like(name, args.device)
    count = sum(parameter.numel() for parameter in parameters)
    needed = count * 4 * RESIDENT_COPIES
    if needed > 0.85 * available_memory_bytes(args.device):
        return {"model": name, "parameters": count, "status": f"skipped: needs {needed / 2**30:.1f} GiB"}
    config = OptimizerConfig(learning_rate=1e-4, weight_decay=0.01)
    gradients = [parameter.grad for parameter in parameters]
    optimizers = {
        "torch default": torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01),
        "foreach": build_adamw(parameters, OptimizerConfig(learning_rate=1e-4, weight_decay=0.01, fused_adamw=False)),
        "fused (trainer)": build_adamw(parameters, config),
    }

    def optimizer_step(optimizer):
        def step():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for parameter, gradient in zip(parameters, gradients):  # the next step's gradient, not timed apart
                parameter.grad = gradient

        return step

    emas = {
        "diffusers default": EMAModel(parameters, decay=0.9999),
        "foreach": EMAModel(parameters, decay=0.9999, foreach=True),
    }
    trainer_ema = (
        "foreach" if build_ema(torch.nn.ParameterList(parameters[:1]), 0.9999).foreach else "diffusers default"
    )
    started = time.perf_counter()
    optimizer_seconds = time_alternately(
        {label: optimizer_step(optimizer) for label, optimizer in optimizers.items()},
        args.device,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    ema_seconds = time_alternately(
        {label: (lambda ema=ema: ema.step(parameters)) for label, ema in emas.items()},
        args.device,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    rows = []
    for kind, seconds, reference in (
        ("AdamW step", optimizer_seconds, "torch default"),
        ("EMA step", ema_seconds, "diffusers default"),
    ):
        for label, values in seconds.items():
            trainer = label == "fused (trainer)" or (kind == "EMA step" and label == trainer_ema)
            rows.append(
                {
                    "kind": kind,
                    "implementation": label + (" (trainer)" if trainer and "trainer" not in label else ""),
                    **ratio_summary(values, seconds[reference]),
                }
            )
    return {
        "model": name,
        "label": MODELS[name][0],
        "parameters": count,
        "status": "ok",
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "runs": {"optimizer": optimizer_seconds, "ema": ema_seconds},
    }


def markdown(results: dict) -> str:
    parts = [
        "# Optimiser and EMA step time\n\n" + machine_line(results["environment"]),
        f"One step over each model's parameter shapes (random values and gradients), {results['repeats']} rounds "
        "after warm-up, candidates round-robin; ratio to the default in the same round, median (min-max). "
        "`torch default` is `torch.optim.AdamW(params)` (a per-tensor loop on the CPU, foreach on CUDA); "
        "`fused (trainer)` is `training.trainer.build_adamw` with the default `fused_adamw: true`; EMA is diffusers' "
        "`EMAModel` without and with `foreach`, `(trainer)` marking the one `build_ema` picks on this device.",
    ]
    for model in results["models"]:
        if model["status"] != "ok":
            parts.append(f"## {model['model']}\n\n{model['status']}")
            continue
        rows = [
            {**row, "vs": f"{row['ratio']:.3g} ({row['ratio_min']:.3g}-{row['ratio_max']:.3g})"}
            for row in model["rows"]
        ]
        parts.append(
            f"## {model['label']} ({model['parameters'] / 1e6:.1f}M parameters)\n\n"
            + markdown_table(
                rows, {"kind": "step", "implementation": "implementation", "median_s": "s", "vs": "ratio"}
            )
        )
    return "\n\n".join(parts) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny tokenizer, 3 rounds")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (CPU EMA times vary: 5 are too few)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (the first step allocates the state)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    args.models = args.models or (["tiny"] if args.quick else DEFAULT_MODELS)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    args.device = torch.device(args.device)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "environment": machine_description(args.device, quick=args.quick),
        "repeats": args.repeats,
        "models": [],
    }
    for name in args.models:
        print(f"{name} ...", flush=True)
        results["models"].append(measure(name, args))
    stem = "optimizer_speed_quick" if args.quick else "optimizer_speed"
    write_results(args.output_dir, stem, results, markdown(results))
    return results


if __name__ == "__main__":
    main()
