"""Seconds and peak memory per case of inference on the CPU, beside MONAI, same windows.

One real 240 x 240 x 155 case from ``../shared/data/brats`` (crop ~136 x 171 x 146: 8
windows of 128^3 at overlap 0.5). Every configuration runs in its own subprocess, so its
peak resident memory (``ru_maxrss``) is its own. Seconds cover preprocessing and
prediction (not reading the NIfTI files); ET suppression is off so label maps compare
the segmentation itself; voxels outside the brain are background in every configuration
(``inference.mask_outside_brain``, applied to MONAI's output too).

    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_inference.py
    # a subset, or a trained run instead of seeded random paper-size weights:
    .venv/bin/python benchmarks/bench_inference.py --configs window_tta4,whole_tta4 \\
        --run-dir RUN_DIR

Configurations (``ours``: ``brats_mtl.inference``; batch of 1 window, channels-last,
float32 unless named bf16):

- ``window_tta{0,4,8}``: sliding windows, 0 / 4 / 8 mirror passes (the paper's protocol
  per model is 4).
- ``monai_cl_tta4``: MONAI ``sliding_window_inference`` (same windows, overlap, Gaussian
  sigma) called once per mirror in a plain loop, same channels-last model; the
  reference for "our windows = MONAI's windows" (segmentation only: MONAI's inferer has
  no place for the classifier's per-window output).
- ``monai_plain_tta0``: the same, default memory layout, one pass: the straightforward
  baseline. Its 4-pass time is extrapolated (x 4) and printed as such.
- ``whole_tta{0,4,8}``, ``whole_5x4``: the whole-volume mode, one model or the paper's
  five folds x 4 mirrors.
- ``whole_bf16_tta4``, ``whole_bf16_5x4``, ``window_bf16_tta4``: bfloat16 autocast.
- ``cpu_b1_tta{0,4}``, ``cpu_b8_tta{0,4}``, ``cpu_b8_bf16_tta4``, ``cpu_b8_o25_tta4``,
  ``cpu_b8_o0_tta4`` (``--configs cpu`` runs most of them beside ``window_tta4`` and
  ``window_bf16_tta4``): the CPU preset (``--preset cpu``: widths 8-128, 64^3 windows)
  with 1 or 8 windows per forward pass and overlap 0.5 / 0.25 / 0 (the fewest windows
  that cover the crop), float32 or bf16; random weights, or the trained run of
  ``--cpu-run-dir``. Dice of ``cpu_b8_*`` against ``cpu_b1_*`` (batch 1: the preset's
  earlier default, the same function), of the approximate ones against ``cpu_b8_tta4``.
- ``window_tta8``, ``window_5x4`` and ``window_bf16_5x4``: 8 mirrors, and five folds x 4
  mirrors, with windows (long: ~10 and ~25 min in float32); not in the default list,
  extrapolated from ``window_tta4`` / ``window_bf16_tta4`` (x 2, x 5) and printed as such
  unless asked for. ``window_bf16_*`` is what ``precision=auto`` runs on a CPU with AMX.

Dice (WT, TC, ET) and the fraction of identical voxels are computed against
``window_tta4`` (one model) or ``whole_5x4`` (five folds). With random weights the label
maps are nearly arbitrary, so they show whether two paths compute the same function, not
how good a segmentation is; ``--run-dir`` uses trained folds instead.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED_BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"


@dataclass(frozen=True)
class Spec:
    impl: str  # "ours" | "monai"
    mode: str = "window"
    tta: int = 4
    folds: int = 1
    precision: str = "32"
    channels_last: bool = True
    reference: str = "window_tta4"
    net: str = "paper"  # "paper": --model (default the paper's network); "cpu": the CPU preset
    batch: int = 1  # windows per forward pass (inference.window_batch_size)
    overlap: float = 0.5


SPECS: dict[str, Spec] = {
    "window_tta0": Spec("ours", tta=0),
    "window_tta4": Spec("ours", tta=4),
    "window_tta8": Spec("ours", tta=8),
    "monai_cl_tta4": Spec("monai", tta=4),
    "monai_plain_tta0": Spec("monai", tta=0, channels_last=False, reference="window_tta0"),
    "whole_tta0": Spec("ours", mode="whole", tta=0, reference="window_tta0"),
    "whole_tta4": Spec("ours", mode="whole", tta=4),
    "whole_tta8": Spec("ours", mode="whole", tta=8, reference="window_tta8"),
    "whole_5x4": Spec("ours", mode="whole", folds=5, reference="window_5x4"),
    "window_bf16_tta4": Spec("ours", tta=4, precision="bf16"),
    "whole_bf16_tta4": Spec("ours", mode="whole", precision="bf16"),
    "whole_bf16_5x4": Spec("ours", mode="whole", folds=5, precision="bf16", reference="whole_5x4"),
    "window_5x4": Spec("ours", folds=5),
    "window_bf16_5x4": Spec("ours", folds=5, precision="bf16", reference="window_5x4"),
    # the CPU preset (widths 8-128, 64^3 windows: 80 windows on this case at overlap 0.5)
    "cpu_b1_tta4": Spec("ours", net="cpu", reference="cpu_b1_tta4"),
    "cpu_b1_tta0": Spec("ours", net="cpu", tta=0, reference="cpu_b1_tta0"),
    "cpu_b8_tta0": Spec("ours", net="cpu", batch=8, tta=0, reference="cpu_b1_tta0"),
    "cpu_b8_tta4": Spec("ours", net="cpu", batch=8, reference="cpu_b1_tta4"),
    "cpu_b8_bf16_tta4": Spec("ours", net="cpu", batch=8, precision="bf16", reference="cpu_b8_tta4"),
    "cpu_b8_o25_tta4": Spec("ours", net="cpu", batch=8, overlap=0.25, reference="cpu_b8_tta4"),
    "cpu_b8_o0_tta4": Spec("ours", net="cpu", batch=8, overlap=0.0, reference="cpu_b8_tta4"),
}
#: ``--configs cpu``: the CPU preset's levers beside the paper network's pass, same run.
CPU_CONFIGS = (
    "window_tta4,window_bf16_tta4,cpu_b1_tta0,cpu_b8_tta0,cpu_b8_tta4,cpu_b8_bf16_tta4,"
    "cpu_b8_o25_tta4"
)
DEFAULT_CONFIGS = (
    "window_tta0,window_tta4,monai_cl_tta4,monai_plain_tta0,whole_tta0,whole_tta4,"
    "whole_tta8,whole_5x4,window_bf16_tta4,whole_bf16_tta4,whole_bf16_5x4"
)


# --- worker: one configuration in this process ------------------------------------------


def build_models(n_folds: int, run_dir: str | None, model: str) -> dict:
    import torch

    from brats_mtl.config import Config
    from brats_mtl.model import MultiTaskNet
    from brats_mtl.presets import cpu_config, tiny_config

    if run_dir:
        from brats_mtl.training import available_folds, load_fold_model

        folds = available_folds(run_dir)[:n_folds]
        if len(folds) < n_folds:  # fewer trained folds than asked: reuse them, say so
            print(f"# {run_dir} has folds {folds}; repeating them", file=sys.stderr)
            folds = (folds * n_folds)[:n_folds]
        return {i: load_fold_model(run_dir, k) for i, k in enumerate(folds)}
    configs = {"paper": Config, "tiny": lambda: tiny_config(patch_size=128), "cpu": cpu_config}
    config = configs[model]()
    models = {}
    for fold in range(n_folds):
        torch.manual_seed(fold)
        models[fold] = MultiTaskNet(config.model).eval()
    return models


def monai_labels(case, net, spec: Spec) -> tuple[np.ndarray, float]:
    """MONAI's sliding_window_inference once per mirror, flipped back and averaged."""
    import torch
    from monai.inferers import sliding_window_inference

    from brats_mtl.conventions import classes_to_labels
    from brats_mtl.inference import mirror_axes
    from brats_mtl.preprocessing import preprocess_case, uncrop

    pre = preprocess_case(case)
    if spec.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    size = net.config.patch_size

    def seg_probs(x: torch.Tensor) -> torch.Tensor:
        if spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return torch.softmax(net(x).seg_logits, 1)

    x = torch.from_numpy(pre.image)[None]
    total = None
    with torch.inference_mode():
        for axes in mirror_axes(spec.tta):
            dims = [2 + a for a in axes]
            flipped = torch.flip(x, dims) if dims else x
            out = sliding_window_inference(
                flipped,
                (size,) * 3,
                1,
                seg_probs,
                overlap=0.5,
                mode="gaussian",
                sigma_scale=0.125,
            )
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
    classes = total[0].argmax(0).numpy()
    labels = uncrop(classes_to_labels(classes), pre.box, pre.original_shape)
    labels[~np.any(case.image != 0, axis=0)] = 0  # as inference.mask_outside_brain
    return labels, float("nan")


def worker(args: argparse.Namespace) -> None:
    import torch

    from brats_mtl.config import InferenceConfig
    from brats_mtl.data import discover_cases, load_case
    from brats_mtl.inference.segmenter import Segmenter, release_image
    from brats_mtl.preprocessing import preprocess_case

    torch.set_num_threads(args.threads)
    spec = SPECS[args.worker]
    files = next(c for c in discover_cases(args.case.parent) if c.case_id == args.case.name)
    case = load_case(files, load_labels=False)
    if spec.net == "cpu":
        models = build_models(spec.folds, args.cpu_run_dir, "cpu")
    else:
        models = build_models(spec.folds, args.run_dir, args.model)
    start = time.perf_counter()
    if spec.impl == "monai":
        labels, et_probability = monai_labels(case, models[0], spec)
    else:
        config = InferenceConfig(
            tta=spec.tta,
            overlap=spec.overlap,
            window_batch_size=spec.batch,
            et_min_voxels=0,
            mode=spec.mode,
            channels_last=spec.channels_last,
            device="cpu",
            precision=spec.precision,
        )
        segmenter = Segmenter.from_models(models, config)
        pre = preprocess_case(case)  # as predict_cases: the raw image is released first
        case = release_image(case)
        prediction = segmenter.predict_preprocessed(pre)
        labels, et_probability = prediction.labels, prediction.et_probability
    seconds = time.perf_counter() - start
    np.save(args.labels_out, labels)
    print(
        json.dumps(
            {
                "config": args.worker,
                "seconds": seconds,
                "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                "et_probability": et_probability,
            }
        )
    )


# --- parent: run the workers, compare --------------------------------------------------


def dice_table(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from brats_mtl.conventions import REGIONS

    out = {}
    for region in ("WT", "TC", "ET"):
        p, r = np.isin(a, REGIONS[region]), np.isin(b, REGIONS[region])
        total = p.sum() + r.sum()
        out[region] = 1.0 if total == 0 else 2.0 * (p & r).sum() / total
    out["same"] = float((a == b).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", type=Path, default=SHARED_BRATS / "BraTS2021_00000")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--run-dir", default=None, help="trained run instead of random weights")
    parser.add_argument(
        "--cpu-run-dir", default=None, help="trained CPU-preset run for the cpu_* configs"
    )
    parser.add_argument("--model", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.case.is_dir():
        sys.exit(f"case folder {args.case} not found; pass --case")

    names = [n for n in (CPU_CONFIGS if args.configs == "cpu" else args.configs).split(",") if n]
    unknown = sorted(set(names) - set(SPECS))
    if unknown:
        sys.exit(f"unknown configs {unknown}; known: {sorted(SPECS)}")
    weights = f"trained run {args.run_dir}" if args.run_dir else f"seeded random {args.model}"
    print(
        f"# case {args.case.name}; {weights} weights; {args.threads} threads; "
        f"{platform.processor() or platform.machine()}; load {os.getloadavg()[0]:.2f}"
    )
    results, labels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.npy"
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                name,
                "--case",
                str(args.case),
                "--labels-out",
                str(out),
                "--threads",
                str(args.threads),
                "--model",
                args.model,
            ]
            if args.run_dir:
                cmd += ["--run-dir", args.run_dir]
            if args.cpu_run_dir:
                cmd += ["--cpu-run-dir", args.cpu_run_dir]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{name}: FAILED\n{proc.stderr[-2000:]}")
                continue
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            labels[name] = np.load(out)
            r = results[name]
            print(
                f"  ran {name:<18} {r['seconds']:8.1f} s  {r['maxrss_gb']:5.2f} GB  "
                f"(load {os.getloadavg()[0]:.2f})",
                flush=True,
            )

    est = {}
    if "monai_plain_tta0" in results:
        est["monai_plain_tta4 (x4 extrapolated)"] = 4 * results["monai_plain_tta0"]["seconds"]
    if "window_tta4" in results and "window_tta8" not in results:
        est["window_tta8 (x2 extrapolated)"] = 2 * results["window_tta4"]["seconds"]
    if "window_tta4" in results and "window_5x4" not in results:
        est["window_5x4 (x5 extrapolated)"] = 5 * results["window_tta4"]["seconds"]
    if "window_bf16_tta4" in results and "window_bf16_5x4" not in results:
        est["window_bf16_5x4 (x5 extrapolated)"] = 5 * results["window_bf16_tta4"]["seconds"]
    baseline = est.get("monai_plain_tta4 (x4 extrapolated)")

    print(
        f"\n{'config':<20}{'seconds':>9}{'vs MONAI':>10}{'peak GB':>9}{'ET prob':>9}"
        f"{'ref':>14}{'Dice WT':>9}{'TC':>7}{'ET':>7}{'same':>8}"
    )
    for name, r in results.items():
        ref = SPECS[name].reference
        scores = ("", "", "", "")
        if ref in labels and ref != name:
            d = dice_table(labels[name], labels[ref])
            scores = (f"{d['WT']:.4f}", f"{d['TC']:.4f}", f"{d['ET']:.4f}", f"{d['same']:.5f}")
        else:
            ref = "-"
        passes = max(1, SPECS[name].tta) * SPECS[name].folds
        ratio = f"{baseline / 4 * passes / r['seconds']:.1f}x" if baseline else ""
        print(
            f"{name:<20}{r['seconds']:9.1f}{ratio:>10}{r['maxrss_gb']:9.2f}"
            f"{r['et_probability']:9.3f}{ref:>14}{scores[0]:>9}{scores[1]:>7}{scores[2]:>7}"
            f"{scores[3]:>8}"
        )
    for name, seconds in est.items():
        print(f"{name:<20}{seconds:9.1f}")
    print(f"# load at the end {os.getloadavg()[0]:.2f}")

    def seconds_of(name):
        return results[name]["seconds"] if name in results else None

    print(
        "\ntargets (2 cores): one model x 4 passes <= 55 s; 5 folds x 4 <= 300 s; "
        "peak <= 3 GB; fast mode Dice >= 0.99 vs windows"
    )
    for name in ("window_tta4", "whole_tta4", "whole_bf16_tta4", "window_bf16_tta4"):
        if seconds_of(name) is not None:
            print(
                f"  1 x 4  {name:<18} {seconds_of(name):7.1f} s  "
                f"{'met' if seconds_of(name) <= 55 else 'NOT met'}"
            )
    for name in ("window_5x4", "window_bf16_5x4", "whole_5x4", "whole_bf16_5x4"):
        if seconds_of(name) is not None:
            print(
                f"  5 x 4  {name:<18} {seconds_of(name):7.1f} s  "
                f"{'met' if seconds_of(name) <= 300 else 'NOT met'}"
            )
    for name, seconds in est.items():
        print(f"  {name:<25} {seconds:7.1f} s  (extrapolated)")
    paper = [seconds_of(n) for n in ("window_tta4", "window_bf16_tta4") if n in results]
    for name in (n for n in results if SPECS[n].net == "cpu" and SPECS[n].tta == 4):
        verdict = "met" if seconds_of(name) <= 60 else "NOT met"
        if paper:
            faster = "no slower" if seconds_of(name) <= min(paper) else "SLOWER"
            verdict += f"; {faster} than the paper network's fastest pass ({min(paper):.1f} s)"
        print(f"  CPU preset 1 x 4 {name:<16} {seconds_of(name):7.1f} s  (<= 60 s: {verdict})")
    worst = max((r["maxrss_gb"], n) for n, r in results.items()) if results else None
    if worst:
        print(
            f"  largest peak: {worst[1]} {worst[0]:.2f} GB {'met' if worst[0] <= 3 else 'NOT met'}"
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "extrapolated": est}, indent=1))


if __name__ == "__main__":
    main()
