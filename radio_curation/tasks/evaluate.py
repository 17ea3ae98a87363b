"""``evaluate.py``: is a representation good, and what did curation do to the data.

One evaluation per run (``eval=<name>``; a Hydra multirun does several), instantiated from
``configs/eval/<name>.yaml`` (the classes are in :mod:`radio_curation.evaluation.evals`). Every evaluation
writes ``metrics.json`` (with the number of images or rows used) and PNG plots into its run directory and
logs them to the enabled trackers; the curation report also writes ``report.html``.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.evals.base import Evaluation, Inputs
from radio_curation.evaluation.model import EmbeddedDataset
from radio_curation.runs.store import RunStore
from radio_curation.tasks.stage import run_stage

#: The evaluate config's run-ID keys: what an evaluation may read (each declares which it does).
RUN_KEYS = ("model_id", "features_id", "subsample_id", "clusters_id", "compare_id")


def _declared(cfg: DictConfig) -> type[Evaluation]:
    cls = get_class(cfg.eval._target_)
    if not issubclass(cls, Evaluation):
        raise RadioCurationError(
            f"eval._target_={cfg.eval._target_} is not an evaluation (a radio_curation.evaluation.evals class)"
        )
    return cls


def result_keys(*, _root_: DictConfig) -> list[str]:
    """``${rc_eval_keys:}``: the settings that define the chosen evaluation's result (``stage.keys``)."""
    return _declared(_root_).result_keys()


def parent_keys(*, _root_: DictConfig) -> list[str]:
    """``${rc_eval_parents:}``: the run-ID keys the chosen evaluation reads (``stage.parents``)."""
    return list(_declared(_root_).parents)


# Before Hydra names the run directory from the stage spec (configs/evaluate.yaml).
for _name, _resolver in (("rc_eval_keys", result_keys), ("rc_eval_parents", parent_keys)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def evaluation(cfg: DictConfig) -> Evaluation:
    """The evaluation ``cfg.eval`` configures."""
    cls = _declared(cfg)
    # Keys it reads through interpolation (catalogue.path of catalogue=lotss_dr2) are named as the user sets them.
    missing = sorted(OmegaConf.missing_keys(cfg.eval))
    if missing:
        raise RadioCurationError(
            f"eval={cls.name} needs a value for {', '.join(missing)}: set it, e.g. {missing[0]}=..."
        )
    return instantiate(cfg.eval, _convert_="all")


def inputs(cfg: DictConfig, evaluation: Evaluation) -> Inputs:
    """The runs ``evaluation`` reads (checked to exist, be complete and be of its stage) and, when it can
    read one, the labelled dataset through the configured model."""
    given = [key for key in RUN_KEYS if cfg[key]]
    evaluation.check_inputs(given)
    store = RunStore.of(cfg)
    runs = {key: store.resolve(str(cfg[key]), stage=evaluation.parents[key]) for key in given}
    images = None
    if evaluation.reads_images:
        images = EmbeddedDataset(
            dataset=cfg.dataset,
            backbone=cfg.backbone,
            normalization=cfg.normalization,
            resize=cfg.resize,
            model=runs.get("model_id"),
            preprocess_from_model=cfg.preprocess_from_model,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            device=cfg.device,
        )
    return Inputs(store=store, runs=runs, images=images)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg.eval`` as an ``evaluate`` stage run (reused when it already exists).

    Its run ID is defined by the settings the evaluation declares (``result_keys``) and the runs it reads:
    ``configs/evaluate.yaml``'s ``stage`` spec takes them from the evaluation's class.

    Returns
    -------
    dict
        :func:`~radio_curation.tasks.stage.run_stage`'s result.
    """
    chosen = evaluation(cfg)
    read = inputs(cfg, chosen)
    return run_stage(cfg, cfg.stage, lambda run: chosen.run(run, read))
