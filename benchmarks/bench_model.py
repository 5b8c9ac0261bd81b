"""CPU speed of the paper's network on one 128^3 patch, against the machine's own peaks.

Prints, per variant: seconds per step (best of the repeats, wall clock; CPU seconds of
the process beside it), peak resident memory, achieved GFLOP/s (from wall clock, and from
CPU time per thread, which other load on a shared machine moves less) and those figures as
fractions of two baselines measured in the same run: a 2048^2 fp32 matmul and the
network's most efficient convolution (28 -> 28 channels, 3x3x3, at 128^3, channels-last).
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device
(738.7 GFLOP per forward without the VAE; 3161 GFLOP per training step with it).

Variants (each in its own process so that peak memory is its own):

    fwd-default      eval forward (segmentation + classifier), inference_mode, NCDHW
    fwd-cl           the same with channels_last_3d weights and input
    fwd-cl-compile   the same through torch.compile (--compile; builds for ~1-2 min)
    fwd-cl-bf16      the same under CPU autocast to bfloat16 (--bf16; AMX where present;
                     reduced precision, not the package default)
    train-default    train-mode forward with the VAE + multitask loss + backward, NCDHW
    train-cl         the same, channels_last_3d

Run under the shared lock, e.g.::

    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_model.py
    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_model.py --compile --bf16

On a shared machine the wall-clock figures move with the load; compare variants through
their ratios to the baselines printed in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from brats_mtl.config import LossConfig, ModelConfig
from brats_mtl.losses import multitask_loss
from brats_mtl.model import MultiTaskNet

FORWARD_VARIANTS = ("fwd-default", "fwd-cl", "fwd-cl-compile", "fwd-cl-bf16")
TRAIN_VARIANTS = ("train-default", "train-cl")


def _maxrss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``ru_maxrss`` survives ``execve`` (a child started by a process that once held
    more reports the parent's peak), so ``VmHWM`` of ``/proc/self/status`` is read first.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def count_flops(config: ModelConfig, patch: int, train: bool) -> float:
    """FLOPs of one forward (eval, no VAE) or one training step (forward with VAE, loss,
    backward), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = MultiTaskNet(config).train(train)
        x = torch.empty(1, config.in_channels, patch, patch, patch)
        with FlopCounterMode(display=False) as counter:
            if train:
                _train_step(net, x)
            else:
                net(x)
    return float(counter.get_total_flops())


def _train_step(net: MultiTaskNet, x: torch.Tensor) -> None:
    out = net(x, with_vae=True)
    targets = torch.zeros(x.shape[:1] + x.shape[2:], dtype=torch.long, device=x.device)
    targets[..., : x.shape[-1] // 2] = 3
    terms = multitask_loss(
        out,
        x,
        targets,
        torch.ones(x.shape[0], dtype=torch.long, device=x.device),
        torch.ones(x.shape[0], dtype=torch.bool, device=x.device),
        LossConfig(),
    )
    terms["loss"].backward()


def _best_rates(fn, flops: float, repeats: int) -> tuple[float, float]:
    """Best GFLOP/s of ``fn`` over ``repeats`` calls: (wall clock, CPU time x threads).

    The second figure divides the process's CPU seconds by the thread count: on a shared
    machine it is what the threads achieve while they run, less moved by other load.
    """
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, (time.process_time() - c) / torch.get_num_threads())
    return flops / wall / 1e9, flops / cpu / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """Best fp32 GFLOP/s of an n x n matmul: (wall, CPU)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return _best_rates(lambda: a @ b, 2 * n**3, repeats)


def conv_gflops(repeats: int = 3) -> tuple[float, float]:
    """Best fp32 GFLOP/s of the network's 28 -> 28 3x3x3 convolution at 128^3,
    channels-last: (wall, CPU)."""
    conv = torch.nn.Conv3d(28, 28, 3, padding=1, bias=False).to(
        memory_format=torch.channels_last_3d
    )
    x = torch.randn(1, 28, 128, 128, 128).to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        return _best_rates(lambda: conv(x), 2 * 28 * 28 * 27 * 128**3, repeats)


def run_variant(variant: str, patch: int, repeats: int) -> dict:
    """Time one variant in this process; returns seconds, CPU seconds and peak memory."""
    torch.manual_seed(0)
    config = ModelConfig(patch_size=patch)
    channels_last = "-cl" in variant
    train = variant.startswith("train")
    net = MultiTaskNet(config).train(train)
    x = torch.randn(1, config.in_channels, patch, patch, patch)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    rss_before = _maxrss_mb()
    compile_s = None

    if train:

        def step() -> None:
            net.zero_grad(set_to_none=True)
            _train_step(net, x)
    else:
        forward = net
        if variant.endswith("compile"):
            forward = torch.compile(net)

        def step() -> None:
            with torch.inference_mode():
                if variant.endswith("bf16"):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        forward(x)
                else:
                    forward(x)

    t = time.perf_counter()
    step()  # warm-up: oneDNN primitive creation, allocator, compilation
    first_s = time.perf_counter() - t
    if variant.endswith("compile"):
        compile_s = first_s
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    best = min(range(repeats), key=walls.__getitem__)
    return {
        "variant": variant,
        "seconds": walls[best],
        "cpu_seconds": cpus[best],
        "first_seconds": first_s,
        "compile_seconds": compile_s,
        "peak_rss_mb": _maxrss_mb(),
        "rss_before_mb": rss_before,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="timed forward passes per variant")
    parser.add_argument("--train-repeats", type=int, default=1, help="timed training steps")
    parser.add_argument("--compile", action="store_true", help="add fwd-cl-compile")
    parser.add_argument("--bf16", action="store_true", help="add fwd-cl-bf16")
    parser.add_argument("--no-train", action="store_true", help="skip the training steps")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        repeats = args.train_repeats if args.child.startswith("train") else args.repeats
        print(json.dumps(run_variant(args.child, args.patch, repeats)))
        return

    variants = ["fwd-default", "fwd-cl"]
    if args.compile:
        variants.append("fwd-cl-compile")
    if args.bf16:
        variants.append("fwd-cl-bf16")
    if not args.no_train:
        variants += list(TRAIN_VARIANTS)
    if args.only:
        variants = [v for v in variants if v in args.only] or list(args.only)

    config = ModelConfig(patch_size=args.patch)
    flops = {
        False: count_flops(config, args.patch, False),
        True: count_flops(config, args.patch, True),
    }
    mm_before, conv_before = matmul_gflops(), conv_gflops()
    results = []
    for variant in variants:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--patch",
            str(args.patch),
            "--repeats",
            str(args.repeats),
            "--train-repeats",
            str(args.train_repeats),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  done {variant}: {results[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    mm_after, conv_after = matmul_gflops(), conv_gflops()
    # the best of the two baselines, in wall and in CPU terms
    peaks = {k: max(mm_before[k], mm_after[k]) for k in (0, 1)}
    conv_peaks = {k: max(conv_before[k], conv_after[k]) for k in (0, 1)}

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, patch {args.patch}^3, batch 1"
    )
    print("baselines, GFLOP/s wall (CPU), before / after the variants:")
    print(
        f"  matmul 2048^2 fp32:        {mm_before[0]:5.0f} ({mm_before[1]:3.0f}) / "
        f"{mm_after[0]:5.0f} ({mm_after[1]:3.0f})"
    )
    print(
        f"  conv 28->28 3^3 @128^3 CL: {conv_before[0]:5.0f} ({conv_before[1]:3.0f}) / "
        f"{conv_after[0]:5.0f} ({conv_after[1]:3.0f})"
    )
    print(
        f"FLOPs: forward {flops[False] / 1e9:.1f} GFLOP, training step {flops[True] / 1e9:.1f} GFLOP"
    )
    print(
        "GFLOP/s (CPU) = FLOPs / (CPU seconds / threads); %conv = share of the best conv baseline"
    )
    header = (
        f"{'variant':16s} {'s/step':>7s} {'cpu s':>7s} {'first s':>8s} {'peak MB':>8s} "
        f"{'base MB':>8s} {'GFLOP/s':>8s} {'(CPU)':>6s} {'%matmul':>8s} {'%conv':>6s} {'(CPU)':>6s}"
    )
    print(header)
    for r in results:
        f = flops[r["variant"].startswith("train")]
        wall = f / r["seconds"] / 1e9
        cpu = f / (r["cpu_seconds"] / r["threads"]) / 1e9
        print(
            f"{r['variant']:16s} {r['seconds']:7.2f} {r['cpu_seconds']:7.2f} "
            f"{r['first_seconds']:8.2f} {r['peak_rss_mb']:8.0f} {r['rss_before_mb']:8.0f} "
            f"{wall:8.1f} {cpu:6.1f} {100 * wall / peaks[0]:7.0f}% "
            f"{100 * wall / conv_peaks[0]:5.0f}% {100 * cpu / conv_peaks[1]:5.0f}%"
        )


if __name__ == "__main__":
    main()
