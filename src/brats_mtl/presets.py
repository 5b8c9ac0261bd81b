"""Named configurations: the paper's, the CPU and demo presets, and the tiny test network.

``--preset`` of ``run``, ``train`` and ``model-summary`` takes :data:`PRESET_NAMES`
(:func:`preset_config`); the demo uses :func:`demo_config`; tests and benchmarks use
:func:`tiny_config`. Each preset is the paper's architecture (paper, Tables 1 and 2)
scaled down; their numbers are not the paper's.
"""

from __future__ import annotations

from dataclasses import replace

from brats_mtl.config import Config, InferenceConfig, LossConfig, ModelConfig, TrainConfig

#: Names accepted by :func:`preset_config` (``--preset`` of ``run`` and ``train``).
PRESET_NAMES = ("paper", "cpu")
#: The ``--preset`` help shared by the commands that take it.
PRESET_HELP = (
    "paper: the paper's network (GPU); cpu: a quarter-width network on 64^3 patches that "
    "trains on a CPU in minutes."
)


def cpu_config(base: Config | None = None) -> Config:
    """The CPU-sized preset for real BraTS data on a machine without a GPU.

    The paper's architecture with widths (8, 16, 32, 64, 128) instead of (28, ..., 448), 64^3
    patches taken at random from each case, a fixed step budget and a learning rate of
    1e-3 (the paper's 1e-4 barely moves this network in 300 steps; 1e-3 reached held-out
    Dice WT/TC/ET of about 0.7-0.8 on the five sample cases, see the README's real-data
    run). Fits a 2-core laptop. Not the paper's network: its numbers are not the paper's.
    Inference uses 4 mirror passes, as the paper, 8 windows per forward pass: PyTorch
    runs a 3-D convolution of a single narrow sample on its slow native path rather
    than oneDNN (its ``use_mkldnn`` rule), which made one window at a time about 3x
    slower per window at these widths (``benchmarks/bench_inference.py --configs cpu``).
    Validation during training uses the same batch.
    """
    base = base or Config()
    return replace(
        base,
        model=replace(
            base.model,
            widths=(8, 16, 32, 64, 128),
            vae_hidden_channels=32,
            latent_channels=16,
            classifier_channels=(32, 16),
            classifier_hidden=16,
            patch_size=64,
        ),
        train=replace(
            base.train,
            patch_sampling="random",
            random_patches_per_case=4,
            max_epochs=1000,
            lr=1e-3,
            max_steps=300,
            val_every_n_epochs=10,
        ),
        inference=replace(base.inference, window_batch_size=8),
    )


def demo_config() -> Config:
    """The demo's preset: a tiny network (widths 8..32) on 32^3 patches, a short schedule.

    Sized so that the whole demo (5 folds) trains, predicts and reports in a few minutes
    on 2 CPU cores. Where it departs from the paper to make the ET classifier work in 320
    steps instead of the paper's 300 epochs (measured with the demo's training step on its
    cohort, five folds):

    - learning rates: the shared encoder at the paper's 1e-4, the decoders at 3e-3, the
      classifier at 1e-3. With 3e-3 everywhere the deep encoder stages stopped depending
      on the input within 20 steps and the classifier gave one probability for every
      case of a fold (0.68-0.94), so ET suppression never fired
      (``MultiTaskModule.parameter_groups``);
    - CE weight 1 instead of the paper's 0.1: with 0.1 the shared encoder's bottleneck
      did not learn ET presence within the schedule (the classifier stayed at the prior
      in 2 of 5 folds after 320 steps; with 1, in none);
    - Dense1 of the classifier at Table 2's 32 units (with dropout 0.5 an 8-unit layer
      keeps 4 on average).
    """
    return Config(
        model=ModelConfig(
            widths=(8, 12, 16, 24, 32),
            vae_hidden_channels=8,
            latent_channels=4,
            classifier_channels=(16, 8),
            classifier_hidden=32,
            patch_size=32,
        ),
        loss=LossConfig(w_ce=1.0),
        train=TrainConfig(
            lr=1e-4,
            decoder_lr_scale=30.0,
            classifier_lr_scale=10.0,
            max_epochs=1000,
            max_steps=320,
            patch_sampling="random",
            random_patches_per_case=4,
            # 20 steps an epoch (10 cases x 4 patches / batch 2): validations at steps 80,
            # 160, 240, 320, four points on each fold's curve
            val_every_n_epochs=4,
            log_every_n_steps=5,
        ),
        inference=InferenceConfig(tta=4, et_min_voxels=50, window_batch_size=4),
    )


def preset_config(name: str) -> Config:
    """The configuration of a ``--preset`` name (see :data:`PRESET_HELP`).

    Args:
        name: ``"paper"`` (the paper's defaults, ``Config()``) or ``"cpu"``
            (:func:`cpu_config`).

    Raises:
        ValueError: on another name (lists the known ones).
    """
    if name == "paper":
        return Config()
    if name == "cpu":
        return cpu_config()
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


def tiny_config(patch_size: int = 32) -> Config:
    """A CPU-sized network for tests and the demo: widths (4, 8, 16, 32, 64), small heads.

    Same architecture as the paper's, scaled down; ``patch_size`` must be a multiple of 16.
    """
    return Config(
        model=ModelConfig(
            widths=(4, 8, 16, 32, 64),
            vae_hidden_channels=8,
            latent_channels=4,
            classifier_channels=(16, 8),
            classifier_hidden=8,
            patch_size=patch_size,
        ),
    )
