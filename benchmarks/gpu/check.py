"""One-shot GPU check: CUDA code paths and throughput of the tokenizer, the DiT and a one-device FSDP step.

Run on the device with `bash benchmarks/gpu/check.sh` (< 8 minutes on one H200); here on the CPU as a smoke test of
the code paths with `python benchmarks/gpu/check.py --device cpu --quick` (tiny presets, 1 iteration, no compile).
All models have random weights built from their configs (no download): costs do not depend on weights, but the NaN
check on random weights is weak (trained decoders have larger activations).

Each section runs in try/except under its own time budget (and the global `--time_budget_s`); a failure or a skip is
a row with its reason. Results are written after every section, so a run cut short still leaves a partial table:
`$OUT/gpu_check.{md,json}` when `$OUT` is set, else `benchmarks/results/gpu_check.{md,json}`.
"""

import argparse
import copy
import datetime
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F


ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s. H200 SXM = H100 SXM = 989.4.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.05, "A10G": 70.0}

ROWS: list[dict] = []
ENV: dict = {}


def add(name, setting, value=None, unit="", peer="", status="ok"):
    if isinstance(value, float):
        value = float(f"{value:.4g}")
    ROWS.append({"name": name, "setting": setting, "value": value, "unit": unit, "peer": peer, "status": status})
    print(f"  {name} | {setting} | {value} {unit} | {peer} | {status}", flush=True)


class Budget:
    def __init__(self, seconds, parent=None):
        self.end = time.monotonic() + seconds
        if parent is not None:
            self.end = min(self.end, parent.end)

    def left(self):
        return self.end - time.monotonic()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_alternating(fns: dict, device, warmup: int, iters: int, budget: Budget) -> dict:
    """Median seconds per call of each fn, the fns called in turn each iteration (so drift hits them alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for i in range(iters):
        for key, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - start)
        if budget.left() < 0:  # at least one timed iteration
            break
    return {k: statistics.median(v) for k, v in times.items()}


def run_section(title, seconds, fn, args, glob: Budget, min_seconds=5.0):
    print(f"\n## {title} (budget {seconds:.0f}s, {glob.left():.0f}s left overall)", flush=True)
    if glob.left() < min_seconds:
        add(title, "-", status=f"skipped: global time budget spent ({glob.left():.0f}s left)")
        return
    start = time.monotonic()
    try:
        fn(args, Budget(seconds, glob))
    except Exception as error:  # one failure must not kill the rest
        traceback.print_exc()
        add(
            title,
            "-",
            status=f"error: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}",
        )
    finally:
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"   ({title}: {time.monotonic() - start:.1f}s)", flush=True)
    write_results(args)


def is_oom(error):
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# ----------------------------------------------------------------------------------------------------------------
# 1. Environment and SDPA backends
# ----------------------------------------------------------------------------------------------------------------


def section_env(args, budget):
    device = args.device
    ENV.update(
        {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": str(device),
            "quick": args.quick,
        }
    )
    for module in ("diffusers", "transformers"):
        try:
            ENV[module] = __import__(module).__version__
        except Exception as error:
            ENV[module] = f"missing ({error})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        ENV["gpu"] = props.name
        ENV["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in props.name), None)
        ENV["bf16_peak_tflops"] = peak
        ENV["bf16_peak_source"] = (
            f"NVIDIA datasheet dense bf16 for {props.name}" if peak else "unknown GPU: MFU not computed"
        )
    else:
        ENV["gpu"] = None
        ENV["bf16_peak_tflops"] = None
        ENV["bf16_peak_source"] = "CPU: no peak assumed, MFU not computed"
    add("env", "gpu", ENV["gpu"] or platform.processor() or "cpu", "", f"torch {ENV['torch']}, cuda {ENV['cuda']}")
    add("env", "bf16 peak assumed", ENV["bf16_peak_tflops"], "TFLOP/s", ENV["bf16_peak_source"])
    add("env", "libraries", f"diffusers {ENV['diffusers']}, transformers {ENV['transformers']}")

    if device.type != "cuda":
        add("sdpa backends", "-", status="skipped: CUDA only (the CPU always runs the math/flash-cpu kernel)")
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # DINOv2-L at 256 px: 16x16 = 256 patch tokens (+ CLS = 257), 16 heads of 64.
    for tokens in (256, 257):
        q, k, v = (torch.randn(16, 16, tokens, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
        ok = []
        for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
            if not hasattr(SDPBackend, backend):
                add("sdpa backend", f"{backend} (16,16,{tokens},64) bf16", status="skipped: not in this torch")
                continue
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    seconds = time_alternating(
                        {"a": lambda: F.scaled_dot_product_attention(q, k, v)}, device, 2, 10, budget
                    )["a"]
                ok.append(backend)
                add("sdpa backend", f"{backend} (16,16,{tokens},64) bf16", seconds * 1e6, "us")
            except Exception as error:
                add(
                    "sdpa backend",
                    f"{backend} (16,16,{tokens},64) bf16",
                    status=f"fails: {str(error).splitlines()[0][:100]}",
                )
        # Which kernel the default dispatch picks, from the profiler's kernel names.
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            F.scaled_dot_product_attention(q, k, v)
            sync(device)
        names = [e.key for e in prof.key_averages() if e.device_type.name == "CUDA"]
        kernel = next(
            (n for n in names if any(s in n.lower() for s in ("flash", "fmha", "efficient", "cudnn", "attention"))),
            names[:1],
        )
        add("sdpa default", f"(16,16,{tokens},64) bf16", str(kernel)[:90], "", f"runnable alone: {', '.join(ok)}")


# ----------------------------------------------------------------------------------------------------------------
# 2. Tokenizer encode / decode throughput, ours vs the FLUX.1 VAE
# ----------------------------------------------------------------------------------------------------------------

MODELS: dict = {}


def build_tokenizers(args):
    if "ours" in MODELS:
        return MODELS["ours"], MODELS["flux"]
    from diffusers import AutoencoderKL

    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.evaluation.tokenizer_adapters import FLUX_VAE_CONFIG

    torch.manual_seed(0)
    with torch.device(args.device):  # initialise on the device: a 300M-parameter ViT inits slowly on the CPU
        ours = AlignedAutoencoderKL.from_preset(args.tokenizer_preset).eval()
        flux = AutoencoderKL(**FLUX_VAE_CONFIG).eval()
    ours.to(args.device, torch.bfloat16)
    flux.to(args.device, torch.bfloat16)
    ours.requires_grad_(False)
    flux.requires_grad_(False)
    MODELS.update(ours=ours, flux=flux)
    add(
        "tokenizer params",
        args.tokenizer_preset,
        sum(p.numel() for p in ours.parameters()) / 1e6,
        "M",
        f"FLUX VAE {sum(p.numel() for p in flux.parameters()) / 1e6:.1f}M",
    )
    add(
        "tokenizer",
        "attention implementation",
        getattr(ours.encoder.config, "_attn_implementation", "?"),
        "",
        f"force_upcast ours={ours.config.force_upcast}, FLUX={flux.config.force_upcast} (applies to fp16 only)",
    )
    return ours, flux


def _encode_fn(model, x):
    return lambda: model.encode(x).latent_dist.mode()


def _decode_fn(model, z):
    return lambda: model.decode(z).sample


def _latents(model, batch, res, device, dtype=torch.bfloat16):
    factor = model.spatial_compression_ratio if hasattr(model, "spatial_compression_ratio") else 8
    if not isinstance(factor, int):
        factor = 2 ** (len(model.config.block_out_channels) - 1)
    return torch.randn(batch, model.config.latent_channels, res // factor, res // factor, device=device, dtype=dtype)


def section_tokenizer(args, budget):
    device = args.device
    ours, flux = build_tokenizers(args)
    settings = [(32, 2)] if args.quick else [(256, 8), (512, 4), (1024, 1)]
    per_setting = Budget(budget.left() / len(settings))
    for res, batch in settings:
        per_setting = Budget(budget.left() / max(1, len([s for s in settings if s[0] >= res])), budget)
        x = torch.rand(batch, 3, res, res, device=device, dtype=torch.bfloat16) * 2 - 1
        note = ""
        with torch.no_grad():
            for op in ("encode", "decode"):
                make = _encode_fn if op == "encode" else _decode_fn
                inputs = (
                    {"ours": x, "flux": x}
                    if op == "encode"
                    else {"ours": _latents(ours, batch, res, device), "flux": _latents(flux, batch, res, device)}
                )
                try:
                    t = time_alternating(
                        {k: make(m, inputs[k]) for k, m in (("ours", ours), ("flux", flux))},
                        device,
                        args.warmup,
                        args.iters,
                        per_setting,
                    )
                except Exception as error:
                    if not (is_oom(error) and res >= 1024 and not ours.use_tiling):
                        raise
                    torch.cuda.empty_cache()
                    ours.enable_tiling()
                    note = " (ours tiled: untiled ran out of memory)"
                    t = time_alternating(
                        {k: make(m, inputs[k]) for k, m in (("ours", ours), ("flux", flux))},
                        device,
                        args.warmup,
                        args.iters,
                        per_setting,
                    )
                ips = {k: batch / v for k, v in t.items()}
                add(
                    f"tokenizer {op}",
                    f"ours bf16 {res}px b{batch}{note}",
                    ips["ours"],
                    "img/s",
                    f"x{ips['ours'] / ips['flux']:.2f} vs FLUX {ips['flux']:.4g} img/s",
                )
        if ours.use_tiling:
            ours.disable_tiling()
        if device.type == "cuda":
            add("tokenizer peak memory", f"{res}px", torch.cuda.max_memory_allocated() / 2**30, "GiB")
            torch.cuda.reset_peak_memory_stats()


def section_compile(args, budget):
    """torch.compile at 256 only (compile time is bounded by the remaining budget; one model/op at a time)."""
    device = args.device
    if args.quick:
        add("tokenizer compiled", "-", status="skipped: --quick (no compile)")
        return
    ours, flux = build_tokenizers(args)
    res, batch = 256, 8
    x = torch.rand(batch, 3, res, res, device=device, dtype=torch.bfloat16) * 2 - 1
    for op in ("decode", "encode"):
        if budget.left() < 60:
            add(f"tokenizer {op} compiled", f"{res}px", status=f"skipped: {budget.left():.0f}s left (< 60s)")
            continue
        fns = {}
        with torch.no_grad():
            for key, model in (("ours", ours), ("flux", flux)):
                inp = x if op == "encode" else _latents(model, batch, res, device)
                compiled = torch.compile(_encode_fn(model, inp) if op == "encode" else _decode_fn(model, inp))
                start = time.monotonic()
                compiled()
                sync(device)
                add(f"tokenizer {op} compile time", f"{key} {res}px b{batch}", time.monotonic() - start, "s")
                fns[key] = compiled
            t = time_alternating(fns, device, 2, args.iters, budget)
        ips = {k: batch / v for k, v in t.items()}
        add(
            f"tokenizer {op} compiled",
            f"ours bf16 {res}px b{batch}",
            ips["ours"],
            "img/s",
            f"x{ips['ours'] / ips['flux']:.2f} vs FLUX {ips['flux']:.4g} img/s",
        )


# ----------------------------------------------------------------------------------------------------------------
# 3. NaN / Inf check of the decoders in half precision
# ----------------------------------------------------------------------------------------------------------------


def section_nan(args, budget):
    device = args.device
    ours, flux = build_tokenizers(args)
    res = 32 if args.quick else 1024
    weak = "random weights: weak check"
    for key, model in (("ours", ours), ("flux", flux)):
        z = _latents(model, 1, res, device, torch.float32)
        variants = [("bf16", torch.bfloat16), ("fp16", torch.float16)]
        if model.config.force_upcast:
            variants.append(("fp16 force_upcast->fp32", torch.float32))
        for label, dtype in variants:
            if budget.left() < 0:
                add(f"nan check {key}", label, status="skipped: section budget spent")
                continue
            m = model if dtype == torch.bfloat16 else copy.deepcopy(model).to(dtype)
            use_tiling = key == "ours" and res >= 1024 and m.use_tiling
            with torch.no_grad():
                try:
                    out = m.decode(z.to(dtype)).sample
                except Exception as error:
                    if not is_oom(error) or key != "ours":
                        raise
                    m.enable_tiling()
                    use_tiling = True
                    out = m.decode(z.to(dtype)).sample
            bad = (~torch.isfinite(out)).sum().item()
            add(
                f"nan check {key} decode",
                f"{label} {res}px{' tiled' if use_tiling else ''}",
                bad,
                "non-finite",
                f"max |x| {out.float().abs().max().item():.3g}; {weak}",
                "ok" if bad == 0 else "NON-FINITE",
            )
            if m is not model:
                del m
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# 4. Training steps: LightningDiT-XL/1, tokenizer stage 2 (L1 only), FSDP on one device
# ----------------------------------------------------------------------------------------------------------------


def count_flops(step_fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step_fn()
    return counter.get_total_flops()


def _autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def report_training(name, setting, batch, seconds, flops, device, cross_check=None):
    ips = batch / seconds
    peak = ENV.get("bf16_peak_tflops")
    achieved = flops / seconds / 1e12
    mfu = f"MFU {100 * achieved / peak:.1f}% of {peak} TFLOP/s" if peak else "MFU: no peak"
    add(name, setting, ips, "img/s", f"{achieved:.4g} TFLOP/s achieved; {mfu}")
    add(
        name + " FLOPs/step",
        "FlopCounterMode fwd+bwd",
        flops / 1e12,
        "TFLOP",
        f"6*N*tokens = {cross_check / 1e12:.4g} TFLOP" if cross_check else "",
    )
    if device.type == "cuda":
        add(name + " peak memory", setting, torch.cuda.max_memory_allocated() / 2**30, "GiB")
        torch.cuda.reset_peak_memory_stats()


def _trainer_adamw(parameters, learning_rate):
    """The optimiser the training recipes build (`training.trainer.build_adamw`: fused AdamW)."""
    from diffusers_aligntok.training.config import OptimizerConfig
    from diffusers_aligntok.training.trainer import build_adamw

    return build_adamw(parameters, OptimizerConfig(learning_rate=learning_rate))


def section_dit_train(args, budget):
    from diffusers_aligntok import LightningDiTTransformer2DModel

    device = args.device
    preset, batch = ("tiny", 4) if args.quick else ("XL", args.dit_batch)
    torch.manual_seed(0)
    with torch.device(device):
        model = LightningDiTTransformer2DModel.from_preset(preset).train()
    cfg = model.config
    optimizer = _trainer_adamw(model.parameters(), 1e-4)
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    t = torch.rand(batch, device=device) * 1000
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)

    def fwd_bwd():
        with _autocast(device):
            out = model(x, t, y).sample
        loss = F.mse_loss(out.float(), x)
        loss.backward()
        return loss

    def step():
        loss = fwd_bwd()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    flops = count_flops(fwd_bwd)
    optimizer.zero_grad(set_to_none=True)
    tokens = batch * (cfg.sample_size // cfg.patch_size) ** 2
    params = sum(p.numel() for p in model.parameters())
    seconds = time_alternating({"step": step}, device, args.warmup, args.iters, budget)["step"]
    loss = step().item()
    setting = f"{preset}/{cfg.patch_size} {cfg.sample_size}x{cfg.sample_size}x{cfg.in_channels} b{batch} bf16 autocast fused AdamW"
    report_training("DiT train step", setting, batch, seconds, flops, device, cross_check=6 * params * tokens)
    add("DiT train loss finite", setting, loss, "", "", "ok" if math.isfinite(loss) else "NON-FINITE")
    del model, optimizer


def section_tokenizer_train(args, budget):
    """Stage 2 of AlignTok: encoder + adapter + decoder trained. L1 loss only (no LPIPS, no discriminator, no
    semantic-preservation term) in this smallest version."""
    from diffusers_aligntok import AlignedAutoencoderKL

    device = args.device
    res, batch = (32, 2) if args.quick else (256, args.tokenizer_batch)
    torch.manual_seed(0)
    with torch.device(device):
        model = AlignedAutoencoderKL.from_preset(args.tokenizer_preset).train()
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
        if hasattr(model.encoder, "gradient_checkpointing_enable"):
            model.encoder.gradient_checkpointing_enable()
    optimizer = _trainer_adamw(model.parameters(), 1e-5)
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1

    def fwd_bwd():
        with _autocast(device):
            out = model(x).sample
        loss = F.l1_loss(out.float(), x)
        loss.backward()
        return loss

    def step():
        loss = fwd_bwd()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    try:
        flops = count_flops(fwd_bwd)
    except Exception as error:
        if device.type != "cuda" or not is_oom(error) or args.gradient_checkpointing:
            raise
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        args.gradient_checkpointing = True
        model.enable_gradient_checkpointing()
        flops = count_flops(fwd_bwd)
    optimizer.zero_grad(set_to_none=True)
    seconds = time_alternating({"step": step}, device, args.warmup, args.iters, budget)["step"]
    loss = step().item()
    setting = (
        f"{args.tokenizer_preset} stage 2 {res}px b{batch} bf16 autocast, L1 only (no LPIPS/GAN)"
        f"{', grad ckpt' if args.gradient_checkpointing else ''}"
    )
    report_training("tokenizer train step", setting, batch, seconds, flops, device)
    add("tokenizer train loss finite", setting, loss, "", "", "ok" if math.isfinite(loss) else "NON-FINITE")
    del model, optimizer


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_fsdp(args, budget):
    import torch.distributed as dist

    from diffusers_aligntok import LightningDiTTransformer2DModel

    device = args.device
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1, **({"device_id": device} if device.type == "cuda" else {}))
    try:
        preset, batch = ("tiny", 2) if args.quick else ("B", 16)
        torch.manual_seed(0)
        with torch.device(device):
            model = LightningDiTTransformer2DModel.from_preset(preset).train()
        try:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            kind = "FSDP2 fully_shard"
            mp = (
                {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)}
                if device.type == "cuda"
                else {}
            )
            for block in model.transformer_blocks if hasattr(model, "transformer_blocks") else []:
                fully_shard(block, **mp)
            fully_shard(model, **mp)
            wrapped = model
        except ImportError:
            from torch.distributed.fsdp import FullyShardedDataParallel

            kind = "FSDP1"
            wrapped = FullyShardedDataParallel(model, device_id=device if device.type == "cuda" else None)
        cfg = model.config
        optimizer = _trainer_adamw(wrapped.parameters(), 1e-4)  # fused AdamW over DTensor shards under FSDP2
        x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
        t = torch.rand(batch, device=device) * 1000
        y = torch.randint(0, cfg.num_classes, (batch,), device=device)
        out = wrapped(x, t, y).sample
        loss = F.mse_loss(out.float(), x)
        loss.backward()
        optimizer.step()
        value = loss.item()
        add(
            "FSDP smoke",
            f"{kind}, {backend}, world 1, DiT-{preset} b{batch}, 1 step",
            value,
            "loss",
            "",
            "ok" if math.isfinite(value) else "NON-FINITE",
        )
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def markdown():
    lines = [
        "# GPU check",
        "",
        f"{ENV.get('date', '')}; GPU {ENV.get('gpu')}; torch {ENV.get('torch')} (CUDA {ENV.get('cuda')}); "
        f"diffusers {ENV.get('diffusers')}; transformers {ENV.get('transformers')}; bf16 peak "
        f"{ENV.get('bf16_peak_tflops')} TFLOP/s ({ENV.get('bf16_peak_source')}); quick={ENV.get('quick')}. "
        "Random weights throughout; medians of timed iterations after warm-up.",
        "",
        "| name | setting | value | unit | ratio / peer | status |",
        "|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        cells = [
            str(r[k]).replace("|", "/") if r[k] is not None else ""
            for k in ("name", "setting", "value", "unit", "peer", "status")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(args):
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    if args.out_dir:
        out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_cpu_smoke" if args.device.type == "cpu" else "gpu_check"
    (out / f"{name}.md").write_text(markdown())
    (out / f"{name}.json").write_text(json.dumps({"env": ENV, "rows": ROWS}, indent=2, default=str))
    return out / f"{name}.md"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny presets, tiny resolution, 1 iteration, no compile")
    parser.add_argument("--time_budget_s", type=float, default=420.0)
    parser.add_argument("--out_dir", default=None, help="overrides $OUT and benchmarks/results/")
    parser.add_argument("--tokenizer_preset", default=None)
    parser.add_argument("--dit_batch", type=int, default=64)
    parser.add_argument("--tokenizer_batch", type=int, default=16)
    parser.add_argument("--gradient_checkpointing", action="store_true", help="(tokenizer step; else only on OOM)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="section names to skip: env tokenizer nan dit tokenizer_train fsdp compile",
    )
    args = parser.parse_args()
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("check.py: --device cuda but torch.cuda.is_available() is False")
    args.tokenizer_preset = args.tokenizer_preset or ("tiny" if args.quick else "aligntok-dinov2-large-f16d32")
    args.warmup, args.iters = (0, 1) if args.quick else (2, 10)
    if args.device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    glob = Budget(args.time_budget_s)
    B = args.time_budget_s / 420.0  # section budgets scale with the global one
    # Ordered by importance: compile (slow to build) goes last and gets what is left.
    sections = [
        ("env", "environment + SDPA backends", 20 * B, section_env),
        ("tokenizer", "tokenizer encode/decode (eager)", 90 * B, section_tokenizer),
        ("nan", "NaN check (half-precision decode)", 30 * B, section_nan),
        ("dit", "DiT training step", 60 * B, section_dit_train),
        ("tokenizer_train", "tokenizer stage-2 training step", 50 * B, section_tokenizer_train),
        ("fsdp", "FSDP smoke (world size 1)", 30 * B, section_fsdp),
        ("compile", "tokenizer encode/decode (torch.compile, 256px)", 1e9, section_compile),
    ]
    for key, title, seconds, fn in sections:
        if key in args.skip:
            print(f"\n## {title}: skipped (--skip)")
            add(title, "-", status="skipped: --skip")
            continue
        run_section(title, seconds, fn, args, glob)
    path = write_results(args)
    print("\n" + markdown())
    print(f"written: {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
