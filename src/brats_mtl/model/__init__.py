"""The multi-task network of the paper (section 4.2, Fig. 2, Tables 1 and 2).

``MultiTaskNet`` composes a shared 3D U-Net ``Encoder`` with a ``SegmentationDecoder``, a
fully convolutional ``VAEDecoder`` and an ``ETClassifier``; ``model_summary`` lists each
part's layers beside Tables 1 and 2.
"""

from brats_mtl.model.classifier import ETClassifier
from brats_mtl.model.decoders import SegmentationDecoder, VAEDecoder
from brats_mtl.model.encoder import Encoder
from brats_mtl.model.multitask import (
    MultiTaskNet,
    MultiTaskOutput,
    check_model_config,
    nearest_valid_sizes,
)

__all__ = [
    "ETClassifier",
    "Encoder",
    "MultiTaskNet",
    "MultiTaskOutput",
    "SegmentationDecoder",
    "SummaryRow",
    "VAEDecoder",
    "check_model_config",
    "model_summary",
    "nearest_valid_sizes",
    "summary_rows",
]
from brats_mtl.model.summary import SummaryRow, model_summary, summary_rows
