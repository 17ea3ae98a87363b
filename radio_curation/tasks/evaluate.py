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
from radio_curation.runs.settings import Built, PositiveInt
from radio_curation.runs.stage import Inputs as StageInputs
from radio_curation.runs.stage import Run, Stage, run_stage

#: The evaluate config's run-ID keys: what an evaluation may read (each declares which it does).
RUN_KEYS = ("model_id", "features_id", "subsample_id", "clusters_id", "compare_id")


def _declared(cfg: DictConfig) -> type[Evaluation]:
    cls = get_class(cfg.eval._target_)
    if not issubclass(cls, Evaluation):
        raise RadioCurationError(
            f"eval._target_={cfg.eval._target_} is not an evaluation (a radio_curation.evaluation.evals class)"
        )
    return cls


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


def inputs(run: StageInputs, evaluation: Evaluation) -> Inputs:
    """The runs ``evaluation`` reads (resolved by the stage: complete, of its stage) and, when it can read
    one, the labelled dataset through the configured model."""
    cfg = run.cfg
    runs = {key: run.parent(key) for key in evaluation.parents if run.parent(key) is not None}
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
    return Inputs(store=run.store, runs=runs, images=images)


def _work(run: Run) -> None:
    chosen = evaluation(run.cfg)
    chosen.run(run, inputs(run, chosen))


def declaration(cfg: DictConfig) -> Stage:
    """The ``evaluate`` stage of the evaluation ``cfg.eval``: the runs its class reads and the settings it
    declares (``result_keys``) define its run."""
    cls = _declared(cfg)
    settings = {key: kind for key, kind in cls.result_keys().items() if key not in cls.parents}
    # Execution-only parts of the settings an evaluation reads (where a model or a sky is read from).
    within = [k for k in ("backbone.runs_dir", "dataset.sky.data_dir") if k.split(".")[0] in settings]
    return Stage(
        name="evaluate",
        work=_work,
        parents=dict(cls.parents),
        settings=settings,
        execution={"batch_size": PositiveInt, "device": str, **dict.fromkeys(within, Built)}
        if cls.reads_images
        else {},
        headline=f"metrics.{cls.headline}",
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg.eval`` as an ``evaluate`` stage run (reused when it already exists).

    Its run ID is defined by the settings the evaluation declares (``result_keys``) and the runs it reads
    (see :func:`declaration`).

    Returns
    -------
    dict
        :func:`~radio_curation.runs.stage.run_stage`'s result.
    """
    stage = declaration(cfg)
    # Before the run is claimed: a missing setting named as the user sets it, and runs it does not read.
    evaluation(cfg).check_inputs([key for key in RUN_KEYS if cfg[key]])
    return run_stage(cfg, stage)
