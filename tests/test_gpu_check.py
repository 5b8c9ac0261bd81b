"""``benchmarks/gpu_check.py`` on a machine without CUDA: a clear message and exit status 2."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_no_cuda_device_message_and_exit_status():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
    assert "Nothing was checked" in done.stderr
    assert done.stdout == ""


def test_cuda_status_names_the_reason(monkeypatch):
    gpu_check = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in gpu_check.cuda_status()
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert "(CUDA 12.4) sees no CUDA device" in gpu_check.cuda_status()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_check.cuda_status() is None


def test_training_steps_code_path_on_cpu():
    from brats_mtl.presets import tiny_config

    gpu_check = _module()
    step_s, peak_gib = gpu_check.training_steps(
        "32", 1, warmup=0, cfg=tiny_config(32), device="cpu"
    )
    assert step_s > 0
    assert peak_gib == 0.0  # no CUDA memory counter on the CPU


def test_paper_protocol_code_path_on_cpu(tmp_path, capsys):
    from brats_mtl.data import write_phantom_cohort
    from brats_mtl.presets import tiny_config

    gpu_check = _module()
    cases = write_phantom_cohort(tmp_path, n_labeled=1, n_unlabeled=0, shape=(40, 40, 40))
    case_dir = cases[0].images["t1"].parent
    gpu_check.paper_protocol(case_dir, skip_cpu=False, cfg=tiny_config(32), device="cpu")
    out = capsys.readouterr().out
    assert "5 folds x 4 passes, float32" in out
    # the same model on the same device: identical labels
    assert "identical voxels 1.000000" in out


@pytest.mark.slow
def test_ddp_train_and_resume_code_path_on_cpu(tmp_path):
    from brats_mtl.data import write_phantom_cohort

    gpu_check = _module()
    data = tmp_path / "data"
    write_phantom_cohort(data, n_labeled=5, n_unlabeled=0, shape=(48, 48, 48))
    work = tmp_path / "work"
    work.mkdir()
    tiny = (
        "model.widths=[4,8,16,32,64]", "model.vae_hidden_channels=8", "model.latent_channels=4",
        "model.classifier_channels=[16,8]", "model.classifier_hidden=8", "model.patch_size=32",
    )  # fmt: skip
    verdict = gpu_check.ddp_train_and_resume(
        data, work, 2, preset="cpu", settings=(*tiny, "train.accelerator=cpu", "train.devices=1")
    )
    assert verdict.startswith("last.ckpt at step 4")
