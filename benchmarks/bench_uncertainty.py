"""Peak memory and seconds of prediction with and without uncertainty maps.

One real 240 x 240 x 155 case from ``../shared/data/brats`` predicted end to end
(``brats_mtl.predict.predict_cases``: read, crop, 5 fold models x 4 mirror passes with sliding
windows, vote, ET suppression, write the label map and, when asked, the three QU-BraTS
maps) into a temporary folder, once per estimator: ``none``, ``entropy``,
``disagreement``. Each estimator runs in its own subprocess, so its peak resident memory
(``ru_maxrss``, the whole process: Python, torch, the arrays) is its own. The fold
models are seeded random networks of the CPU preset (widths 8..128, 64^3 windows) by
default, of the tiny test network (``--model tiny``), or a pointwise toy predictor
without a network (``--model toy``: the same windows, blending, votes and maps at almost
no compute, so the 20 passes of the paper's protocol run in minutes on a small CPU). The
memory the estimators add depends on the crop, not on the weights.

    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_uncertainty.py
    .venv/bin/python benchmarks/bench_uncertainty.py --model tiny --overlap 0.25

Printed: seconds, peak memory (GB) and its ratio to ``none`` (the target is at most
1.2), and whether the label maps equal those of ``none`` (entropy: same computation;
disagreement: the same sums in another order of float additions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"
ESTIMATORS = ("none", "entropy", "disagreement")


class PointwiseToy:
    """A predictor without a network: class probabilities = softmax of a random 4 x 4 mix
    of the z-scored channels, seeded per fold. Costs almost nothing, so the peak is the
    prediction's own bookkeeping (accumulators, votes, maps): the worst case for the
    ratio, since a network's activations add the same amount to every estimator."""

    def __init__(self, seed: int) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(4, 4, generator=generator) * 3.0

    def __call__(self, x):
        import torch

        logits = torch.einsum("kc,bc...->bk...", self.mix, x)
        return torch.softmax(logits, dim=1), torch.full((x.shape[0],), 0.9)


def worker(args: argparse.Namespace) -> None:
    """Predict the case with one estimator; print a JSON line of what was measured."""
    import nibabel as nib
    import numpy as np
    import torch

    from brats_mtl.config import InferenceConfig
    from brats_mtl.data import discover_cases
    from brats_mtl.inference import Segmenter
    from brats_mtl.model import MultiTaskNet
    from brats_mtl.predict import predict_cases
    from brats_mtl.presets import cpu_config, tiny_config

    torch.set_num_threads(args.threads)
    models = {}
    for fold in range(args.folds):
        torch.manual_seed(fold)
        if args.model == "toy":
            models[fold] = PointwiseToy(fold)
        else:
            model_config = (cpu_config() if args.model == "cpu" else tiny_config(64)).model
            models[fold] = MultiTaskNet(model_config).eval()
    config = InferenceConfig(
        tta=args.tta,
        overlap=args.overlap,
        device="cpu",
        precision="32",
        uncertainty=args.estimator,
    )
    (files,) = [c for c in discover_cases(args.case.parent) if c.case_id == args.case.name]
    out = Path(args.out)
    start = time.perf_counter()
    segmenter = (
        Segmenter(models, config, patch_size=64)
        if args.model == "toy"
        else Segmenter.from_models(models, config)
    )
    table = predict_cases([files], segmenter, out)
    seconds = time.perf_counter() - start
    labels = np.asarray(nib.load(out / f"{files.case_id}.nii.gz").dataobj)
    np.save(out / "labels.npy", labels)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                "status": str(table["status"].iloc[0]),
                "error": str(table["error"].iloc[0]),
                "mean_uncertainty": {
                    r: float(table[f"mean_uncertainty_{r}"].iloc[0]) for r in ("WT", "TC", "ET")
                },
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=SHARED_BRATS / "BraTS2021_00000")
    parser.add_argument("--model", choices=("cpu", "tiny", "toy"), default="cpu")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--estimator", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.estimator:
        worker(args)
        return
    if not args.case.is_dir():
        sys.exit(f"case folder {args.case} not found (the shared sample data)")

    import numpy as np

    weights = (
        "a pointwise toy predictor"
        if args.model == "toy"
        else (f"{args.model}-preset random weights")
    )
    print(
        f"# case {args.case.name}; {weights}; {args.folds} folds x "
        f"{args.tta} mirror passes; overlap {args.overlap}; {args.threads} threads; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    results, labels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.estimators.split(","):
            out = Path(tmp) / name
            cmd = [
                sys.executable,
                __file__,
                "--case",
                str(args.case),
                "--model",
                args.model,
                "--folds",
                str(args.folds),
                "--tta",
                str(args.tta),
                "--overlap",
                str(args.overlap),
                "--threads",
                str(args.threads),
                "--estimator",
                name,
                "--out",
                str(out),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            labels[name] = np.load(out / "labels.npy")
            r = results[name]
            print(
                f"  ran {name:<13} {r['seconds']:8.1f} s  {r['maxrss_gb']:5.2f} GB  "
                f"{r['status']} {r['error'] if r['status'] != 'ok' else ''}",
                flush=True,
            )
    base = results.get("none")
    print(
        f"\n{'estimator':<14}{'seconds':>9}{'peak GB':>9}{'x none':>8}  labels vs none   "
        "mean uncertainty WT/TC/ET"
    )
    for name, r in results.items():
        ratio = f"{r['maxrss_gb'] / base['maxrss_gb']:.3f}" if base else "-"
        if "none" in labels:
            same = float(np.mean(labels[name] == labels["none"]))
            agree = "identical" if same == 1.0 else f"{100 * same:.4f}% same"
        else:
            agree = "-"
        means = "/".join(f"{v:.1f}" for v in r["mean_uncertainty"].values())
        print(f"{name:<14}{r['seconds']:9.1f}{r['maxrss_gb']:9.2f}{ratio:>8}  {agree:<16} {means}")


if __name__ == "__main__":
    main()
