"""Training throughput: the Lightning training step against a plain PyTorch loop.

Both loops train the same network (same seed, same initial weights) on the same cached
patches, drawn by the same ``PatchDataset``/``PatchSampler``/``ResumableLoader`` as
``brats-mtl train`` uses, for the same number of steps, in one process. Printed per loop:

- patches per second (batch size x measured steps / wall time of those steps);
- the share of the step time spent waiting for data: time inside the DataLoader
  iterator's ``next()`` over the wall time of the measured steps;
- patches per CPU second of the process, which a busy shared machine disturbs far less
  than wall time (use ``--threads 1`` for a clean figure: two spinning OpenMP threads on
  a loaded two-core machine waste CPU time);
- the ratios Lightning / plain (target: >= 0.95) and the data-wait shares (target < 5 %).

The loops alternate (plain, Lightning, Lightning, plain, ...) so that load changes on a
shared machine hit both; each figure is the median over the rounds. The first
``--warmup`` steps of every round are not measured.

Configuration: a CPU-sized network (widths 8, 16, 32, 64, 128; patch 64; batch 2) on a
synthetic cohort (default) or on the cases of ``--data``. Run under the shared lock::

    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_training.py
    flock /tmp/brats-heavy.lock .venv/bin/python benchmarks/bench_training.py \\
        --data ../shared/data/brats --workers 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from brats_mtl.config import apply_overrides
from brats_mtl.data import discover_cases, write_phantom_cohort
from brats_mtl.losses import multitask_loss
from brats_mtl.presets import tiny_config
from brats_mtl.training.cache import build_cache
from brats_mtl.training.datasets import PatchDataset, PatchSampler, ResumableLoader, worker_init

CONFIG = [
    "model.widths=[8,16,32,64,128]",
    "model.vae_hidden_channels=16",
    "model.latent_channels=8",
    "model.classifier_channels=[32,16]",
    "model.classifier_hidden=16",
    "model.patch_size=64",
    "train.accelerator=cpu",
    "train.devices=1",
]


class TimedLoader(ResumableLoader):
    """A ResumableLoader that adds the time spent in each ``next()`` to ``wait_s``.

    (Lightning takes the length from ``len()``, which the subclass keeps.)
    """

    wait_s = 0.0

    def __iter__(self):
        iterator = super().__iter__()

        def timed():
            while True:
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                TimedLoader.wait_s += time.perf_counter() - start
                yield batch

        return timed()


def make_loader(dataset: PatchDataset, config, workers: int) -> TimedLoader:
    sampler = PatchSampler(len(dataset), seed=config.train.seed)
    return TimedLoader(
        dataset,
        sampler,
        batch_size=config.train.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
    )


def plain_loop(config, dataset, steps: int, warmup: int, workers: int) -> tuple[float, ...]:
    """Patches per wall second, data-wait share, patches per CPU second: a plain loop."""
    from brats_mtl.model import MultiTaskNet

    torch.manual_seed(config.train.seed)
    # the activation layout of MultiTaskModule (train.channels_last)
    memory_format = (
        torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
    )
    net = MultiTaskNet(config.model).train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    loader = make_loader(dataset, config, workers)
    done, epoch = 0, 0
    start = None
    while done < steps + warmup:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if done == warmup:
                TimedLoader.wait_s = 0.0
                start, cpu_start = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)  # as Lightning: before the forward pass
            image = batch["image"].contiguous(memory_format=memory_format)
            output = net(image, with_vae=True)
            terms = multitask_loss(
                output,
                image,
                batch["class_targets"],
                batch["et_target"],
                batch["labeled"],
                config.loss,
            )
            terms["loss"].backward()
            optimizer.step()
            del output, terms  # nothing of this step outlives it, as in Lightning
            done += 1
            if done == steps + warmup:
                break
        epoch += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    patches = steps * config.train.batch_size
    return patches / wall, TimedLoader.wait_s / wall, patches / cpu


def lightning_loop(config, dataset, steps: int, warmup: int, workers: int) -> tuple[float, ...]:
    """The same figures for ``MultiTaskModule`` under ``lightning.Trainer``."""
    import lightning as L

    from brats_mtl.training.module import MultiTaskModule

    class Clock(L.Callback):
        start = stop = cpu_start = cpu_stop = wait_s = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == warmup:
                TimedLoader.wait_s = 0.0
                Clock.start, Clock.cpu_start = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == steps + warmup:
                Clock.stop, Clock.cpu_stop = time.perf_counter(), time.process_time()
                Clock.wait_s = TimedLoader.wait_s

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return make_loader(dataset, config, workers)

    torch.manual_seed(config.train.seed)
    module = MultiTaskModule(config)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=Data())
    wall, cpu = Clock.stop - Clock.start, Clock.cpu_stop - Clock.cpu_start
    patches = steps * config.train.batch_size
    return patches / wall, Clock.wait_s / wall, patches / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: phantoms)"
    )
    parser.add_argument("--steps", type=int, default=20, help="measured steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = apply_overrides(tiny_config(64), CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "cohort"
            write_phantom_cohort(data, n_labeled=4, n_unlabeled=1, shape=(96, 96, 80), seed=0)
        t0 = time.perf_counter()
        cases = build_cache(discover_cases(data), Path(tmp) / "cache")
        cache_s = time.perf_counter() - t0
        dataset = PatchDataset(cases, config.model.patch_size)
        print(
            f"data: {data} ({len(cases)} cases, {len(dataset)} grid patches of 64^3; "
            f"cache built in {cache_s:.1f} s); torch threads {torch.get_num_threads()}, "
            f"DataLoader workers {args.workers}"
        )
        results: dict[str, list[tuple[float, ...]]] = {"plain": [], "lightning": []}
        loops = [("plain", plain_loop), ("lightning", lightning_loop)]
        for r in range(args.rounds):
            for name, loop in loops if r % 2 == 0 else loops[::-1]:
                results[name].append(loop(config, dataset, args.steps, args.warmup, args.workers))
                rate, wait, cpu_rate = results[name][-1]
                print(
                    f"round {r}: {name:9s} {rate:6.3f} patches/s (wall), {cpu_rate:6.3f} "
                    f"patches per CPU second, data wait {100 * wait:4.1f} %",
                    flush=True,
                )
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    for name, label in (("plain", "plain loop"), ("lightning", "Lightning ")):
        rate, wait, cpu_rate = med[name]
        print(
            f"{label}: {rate:6.3f} patches/s (wall), {cpu_rate:6.3f} patches per CPU second, "
            f"data wait {100 * wait:.1f} % of the step time (median of {args.rounds} rounds)"
        )
    print(
        f"Lightning / plain: {med['lightning'][0] / med['plain'][0]:.3f} (wall), "
        f"{med['lightning'][2] / med['plain'][2]:.3f} (CPU time); target >= 0.95"
    )


if __name__ == "__main__":
    main()
