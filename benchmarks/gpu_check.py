"""One-command check of the CUDA paths: training steps, DDP through the CLI, the paper protocol.

Run on a machine with an NVIDIA GPU and a CUDA build of PyTorch (under 5 minutes on one
recent GPU)::

    .venv/bin/python benchmarks/gpu_check.py                 # real case from ../shared/data/brats
    .venv/bin/python benchmarks/gpu_check.py --data DIR --skip-cpu

Printed, each as it finishes:

1. **Training steps** of the paper network (``preset paper``: widths 28-448, 128^3
   patches, VAE and classifier on) at batch 2 x 4 x 128^3 on random data, in float32
   and in bf16-mixed (bfloat16 autocast, float32 weights: Lightning's ``bf16-mixed``):
   median seconds per optimizer step and peak GPU memory (``torch.cuda.max_memory_
   allocated``).
2. **DDP through the CLI**: ``brats-mtl train`` on the cases of ``--data`` with
   ``train.strategy=ddp``, one GPU, a few steps, then ``--resume`` for a few more; the
   check is that ``last.ckpt`` exists after each and the resumed run reached the larger
   step count.
3. **The paper protocol** (5 folds x 4 mirror passes, sliding windows of 128^3, random
   weights seeded per fold) on one real case: seconds per case (preprocessing and
   prediction, not reading the files).
4. **CPU agreement**: fold 0's model, one pass without TTA, on the GPU (float32) and on
   the CPU (float32): Dice WT/TC/ET and identical voxels between the two label maps
   (random weights: this checks that both devices compute the same function).

On a machine without CUDA it prints ``no CUDA device`` with what it found and exits
with status 2.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED_BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"
NO_CUDA_EXIT = 2


def cuda_status() -> str | None:
    """``None`` when a CUDA device is usable, else the reason, for the message."""
    import torch

    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    if built is None:
        return f"torch {torch.__version__} is a CPU-only build (no CUDA support compiled in)"
    return f"torch {torch.__version__} (CUDA {built}) sees no CUDA device"


def _paper_config():
    from brats_mtl.config import load_config

    return load_config()


def training_steps(
    precision: str, steps: int, warmup: int, cfg=None, device: str = "cuda"
) -> tuple[float, float]:
    """Median seconds per step and peak GPU memory (GiB) of the paper network.

    Args:
        precision: "32" (float32) or "bf16-mixed" (bfloat16 autocast, float32 weights).
        steps: measured optimizer steps.
        warmup: steps run before measuring (cuDNN autotuning, allocator warm-up).
        cfg: the configuration (default: the paper's); tests pass a tiny one.
        device: "cuda" here; tests run the same code on "cpu" (peak memory then 0).
    """
    import torch

    from brats_mtl.losses import multitask_loss
    from brats_mtl.model import MultiTaskNet

    cfg = cfg or _paper_config()
    torch.manual_seed(0)
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    net = MultiTaskNet(cfg.model).to(device).to(memory_format=torch.channels_last_3d)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    p = cfg.model.patch_size
    image = torch.randn(2, 4, p, p, p, device=device).to(memory_format=torch.channels_last_3d)
    targets = torch.randint(0, cfg.model.n_classes, (2, p, p, p), device=device)
    et = torch.tensor([1, 0], device=device)
    labeled = torch.tensor([True, True], device=device)
    torch.backends.cudnn.benchmark = True
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = net(image, with_vae=True)
            loss = multitask_loss(out, image, targets, et, labeled, cfg.loss)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    del net, opt, image, targets
    if cuda:
        torch.cuda.empty_cache()
    return statistics.median(times), peak_gib


def _brats_mtl(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "brats_mtl.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


GPU_TRAIN_SETTINGS = ("train.accelerator=gpu", "train.devices=1", "train.precision=bf16-mixed")


def ddp_train_and_resume(
    data: Path,
    work: Path,
    steps: int,
    preset: str = "paper",
    settings: tuple[str, ...] = GPU_TRAIN_SETTINGS,
) -> str:
    """Train fold 0 with DDP on one GPU for ``steps`` steps, resume to ``2 * steps``.

    Args:
        data: a folder of labeled BraTS cases.
        work: an empty folder for the run.
        steps: steps of the first run; the resumed run goes on to ``2 * steps``.
        preset: the configuration preset; tests pass a small one.
        settings: ``--set`` values for the device; tests pass CPU ones.

    Returns:
        A one-line verdict; raises RuntimeError with the command's output on failure.
    """
    import torch

    run = work / "ddp_run"
    common = [
        "train", str(data), "--out", str(run), "--fold", "0", "--preset", preset,
        "--no-progress", "--set", "train.strategy=ddp",
        "--set", "train.patch_sampling=random", "--set", "train.random_patches_per_case=1",
        "--set", "train.checkpoint_every_n_steps=1",
    ]  # fmt: skip
    for setting in settings:
        common += ["--set", setting]
    for label, extra in (
        ("first", ["--set", f"train.max_steps={steps}"]),
        ("resume", ["--resume", "--set", f"train.max_steps={2 * steps}"]),
    ):
        start = time.perf_counter()
        done = _brats_mtl(*common, *extra)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(
                f"DDP {label} run failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        print(f"  DDP {label} run: exit 0 in {seconds:.1f} s")
    last = run / "fold_0" / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RuntimeError(f"DDP run wrote no {last}")
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    if step != 2 * steps:
        raise RuntimeError(f"resumed run ended at step {step}, expected {2 * steps}")
    return f"last.ckpt at step {step} after resume (expected {2 * steps}): OK"


def _region_dice(a: np.ndarray, b: np.ndarray) -> list[float]:
    from brats_mtl.conventions import REGIONS
    from brats_mtl.evaluation.metrics import dice

    return [dice(np.isin(a, REGIONS[r]), np.isin(b, REGIONS[r])) for r in ("WT", "TC", "ET")]


def paper_protocol(case_dir: Path, skip_cpu: bool, cfg=None, device: str = "cuda") -> None:
    """Time 5 folds x 4 passes on one case; compare fold 0 without TTA on GPU and CPU.

    Args:
        case_dir: one BraTS case folder.
        skip_cpu: leave out the CPU agreement check.
        cfg: the configuration (default: the paper's); tests pass a tiny one.
        device: "cuda" here; tests run the same code on "cpu".
    """
    import torch

    from brats_mtl.config import apply_overrides
    from brats_mtl.data import discover_cases, load_case
    from brats_mtl.inference import Segmenter
    from brats_mtl.model import MultiTaskNet

    cfg = cfg or _paper_config()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    models = {}
    for fold in range(5):
        torch.manual_seed(fold)
        models[fold] = MultiTaskNet(cfg.model).eval()
    case = load_case(next(c for c in discover_cases(case_dir.parent) if c.case_id == case_dir.name))
    gpu = apply_overrides(cfg, [f"inference.device={device}", "inference.precision=32"]).inference
    segmenter = Segmenter.from_models(models, gpu)
    segmenter.predict_case(case, folds=[0])  # warm-up: cuDNN autotuning, CUDA context
    sync()
    start = time.perf_counter()
    segmenter.predict_case(case)
    sync()
    print(f"  paper protocol, 5 folds x 4 passes, float32: {time.perf_counter() - start:.1f} s")
    bf16 = apply_overrides(
        cfg, [f"inference.device={device}", "inference.precision=bf16"]
    ).inference
    start = time.perf_counter()
    Segmenter.from_models(models, bf16).predict_case(case)
    sync()
    print(f"  paper protocol, 5 folds x 4 passes, bf16:    {time.perf_counter() - start:.1f} s")
    if skip_cpu:
        return
    no_tta = ["inference.tta=0", "inference.precision=32", "inference.et_min_voxels=0"]
    on_gpu = Segmenter.from_models(
        {0: models[0]}, apply_overrides(cfg, [*no_tta, f"inference.device={device}"]).inference
    )
    on_cpu = Segmenter.from_models(
        {0: models[0]}, apply_overrides(cfg, [*no_tta, "inference.device=cpu"]).inference
    )
    labels_gpu = on_gpu.predict_case(case).labels
    start = time.perf_counter()
    labels_cpu = on_cpu.predict_case(case).labels
    cpu_s = time.perf_counter() - start
    wt, tc, et = _region_dice(labels_gpu, labels_cpu)
    same = float(np.mean(labels_gpu == labels_cpu))
    print(
        f"  GPU vs CPU labels (fold 0, no TTA, float32; CPU took {cpu_s:.1f} s): "
        f"Dice WT {wt:.4f} TC {tc:.4f} ET {et:.4f}, identical voxels {same:.6f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the checks; returns the exit status (2 without a CUDA device)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_BRATS, help="BraTS case folder")
    parser.add_argument("--steps", type=int, default=5, help="measured training steps")
    parser.add_argument("--ddp-steps", type=int, default=3, help="DDP steps before resume")
    parser.add_argument("--skip-cpu", action="store_true", help="skip the CPU agreement")
    args = parser.parse_args(argv)

    reason = cuda_status()
    if reason is not None:
        print(f"gpu_check: no CUDA device: {reason}. Nothing was checked; run this on a "
              "machine with an NVIDIA GPU and a CUDA build of PyTorch (see the README's "
              "install section).", file=sys.stderr)  # fmt: skip
        return NO_CUDA_EXIT
    import torch

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")  # fmt: skip
    cases = sorted(p for p in args.data.iterdir() if p.is_dir() and re.match(r"BraTS", p.name))
    if not cases:
        print(f"gpu_check: no BraTS case folders in {args.data}", file=sys.stderr)
        return 1
    print("1. training steps, paper network, batch 2 x 128^3:")
    for precision in ("32", "bf16-mixed"):
        step_s, peak = training_steps(precision, args.steps, warmup=2)
        print(f"  {precision:>10}: {step_s:.3f} s/step, peak {peak:.1f} GiB")
    print("2. DDP (1 GPU) through `brats-mtl train`, then --resume:")
    with tempfile.TemporaryDirectory() as work:
        print("  " + ddp_train_and_resume(args.data, Path(work), args.ddp_steps))
    print(f"3-4. inference on {cases[0].name}:")
    paper_protocol(cases[0], args.skip_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
