"""What every benchmark under `benchmarks/` shares: the machine description written beside each result, device
synchronisation, round-robin timing with ratios to a peer, and Markdown tables.

The benchmarks are scripts (`python benchmarks/<name>.py`), so this module is imported as a sibling file: running a
script puts its folder first on `sys.path`, and the tests load the scripts with that folder on the path.
"""

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


BF16_INSTRUCTIONS = ("avx512_bf16", "amx_bf16")


def sync(device: torch.device) -> None:
    """Waits for queued CUDA work, so that a wall-clock interval covers the work it times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU has bf16 matmul instructions; without them torch emulates bf16, far slower than fp32 (measured
    on an AVX2-only EPYC with torch 2.14: ~6x for a Linear, ~100-250x for a 3x3 Conv2d)."""
    return bool(set(BF16_INSTRUCTIONS) & cpu_flags())


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not skip


def machine_description(device: torch.device, **extra) -> dict:
    """The machine, software and load a result was measured under (the first lines of every results file)."""
    import accelerate
    import diffusers
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_instructions": sorted(set(BF16_INSTRUCTIONS) & cpu_flags()) or "none (AVX512-BF16/AMX absent)",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "memory_available_gib_at_start": round(available_memory_bytes(torch.device("cpu")) / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return {**info, **extra}


def machine_line(info: dict) -> str:
    """One Markdown sentence naming the machine of `machine_description`."""
    where = info["gpu"] or f"{info['cpu']} ({info['torch_threads']} threads, {info['torch_cpu_capability']})"
    return (
        f"{info['date']}, `{info['command']}`, {where}, torch {info['torch']}, diffusers {info['diffusers']}, "
        f"load average at start {info['load_average_at_start'][0]}."
    )


def time_alternately(
    candidates: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each candidate over `repeats` rounds after `warmup` untimed ones. Every round runs each
    candidate once, the first one rotating, so load from other processes slows all of them alike."""
    names = list(candidates)
    seconds = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sync(device)
            start = time.perf_counter()
            candidates[name]()
            sync(device)
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def ratio_summary(seconds: list[float], reference: list[float]) -> dict[str, float]:
    """Median seconds, and the median with min-max of the per-round ratios to `reference` (timed in the same rounds)."""
    ratios = [ours / theirs for ours, theirs in zip(seconds, reference)]
    return {
        "median_s": statistics.median(seconds),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of `rows`, one column per `columns` key, headed by its value."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(output_dir: str | Path, stem: str, results: dict, markdown: str) -> Path:
    """Writes `<stem>.json` (for tooling) and `<stem>.md` (for reading) under `output_dir`, prints the Markdown and
    returns the Markdown's path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (output_dir / f"{stem}.md").write_text(markdown)
    print("\n" + markdown)
    print(f"written: {output_dir / stem}.md and .json", flush=True)
    return output_dir / f"{stem}.md"
