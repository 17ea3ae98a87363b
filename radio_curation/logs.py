"""What a stage's log leaves out: third-party notices, silenced at their source, in this one place.

A stage's log tells what the stage read, did and wrote, and how long it took (:mod:`radio_curation.runs.stage`
writes the opening and closing lines of every run). Libraries that announce themselves at INFO would open it
with lines that read like errors; their loggers are set to WARNING here, so their warnings and errors still
show. A level set before (``hydra.verbose=[faiss.loader]`` sets DEBUG) is kept.
"""

from __future__ import annotations

import logging
import warnings

#: Third-party loggers whose INFO lines are notices, not news, and why.
QUIET_LOGGERS = {
    # faiss' loader tries its AVX512 and AVX2 builds first and logs each one the wheel lacks, as an error
    # message, before it loads the generic build.
    "faiss.loader": "the AVX512/AVX2 builds it could not load",
    # Lightning's rank-zero notices: whether a GPU/TPU is available (the stages log the device they run on),
    # the litlogger advertisement, the trainer settings it read.
    "pytorch_lightning.utilities.rank_zero": "device availability and the litlogger advertisement",
    "lightning_fabric.utilities.rank_zero": "device availability",
}

#: Warnings raised inside third-party code however we call it: (message regex, category, why).
THIRD_PARTY_WARNINGS = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        # Lightning's CombinedLoader flattens every dataloader with it, at every fit and predict.
        "pytorch_lightning 2.6's pytree helper builds torch 2.14's deprecated LeafSpec",
    ),
)


def quiet_third_party() -> None:
    """Set :data:`QUIET_LOGGERS` without a level of their own to WARNING, and ignore
    :data:`THIRD_PARTY_WARNINGS`, in this process."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    for message, category, _ in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
