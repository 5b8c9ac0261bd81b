"""The callback that keeps a fold's ``best.ckpt``, also after its run folder has moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that keeps its best score when the folder moved.

    Lightning (``ModelCheckpoint.load_state_dict``, 2.x) restores the best validation
    score on resume only when the checkpoint folder is the path recorded in the
    checkpoint; in a copied or moved run folder the first validation after ``--resume``
    then replaces ``best.ckpt`` whatever its score. A fold's checkpoint folder holds
    files of fixed names (``best.ckpt``, ``last.ckpt``), so the recorded paths are moved
    to this folder by name and the saved score is kept. Arguments are those of
    ``ModelCheckpoint``.
    """

    @property
    def state_key(self) -> str:
        """The key of ``ModelCheckpoint``'s state in a checkpoint, under its own name.

        Lightning prefixes the key with the class name; checkpoints written with
        ``ModelCheckpoint`` (brats-mtl 0.1.0) keep their state under that name.
        """
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved state, with its paths moved to this callback's folder.

        Args:
            state_dict: the state that ``ModelCheckpoint.state_dict`` saved.
        """
        saved_dir = state_dict.get("dirpath")
        if self.dirpath is not None and saved_dir is not None and saved_dir != self.dirpath:
            here = Path(self.dirpath)

            def moved(path: str | None) -> str | None:
                return str(here / Path(path).name) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": moved(state_dict.get("best_model_path")),
                "kth_best_model_path": moved(state_dict.get("kth_best_model_path")),
                "last_model_path": moved(state_dict.get("last_model_path")),
                "best_k_models": {
                    moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()
                },
            }
        super().load_state_dict(state_dict)
