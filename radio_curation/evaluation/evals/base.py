"""What every evaluation declares: the settings that define its result and the runs it reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from radio_curation.errors import RadioCurationError
from radio_curation.evaluation.model import EmbeddedDataset
from radio_curation.evaluation.outputs import Outputs, RunHandle
from radio_curation.runs.settings import Built, PositiveInt
from radio_curation.runs.store import RunRecord, RunStore

#: Settings of the evaluate config that define the features of a labelled dataset through a model.
#: The settings of the model and labelled dataset an evaluation that reads images uses, with their types.
MODEL_SETTINGS: Mapping[str, Any] = {
    "dataset": Built,
    "backbone": Built,
    "normalization": Built,
    "resize": PositiveInt | None,
    "preprocess_from_model": bool,
    "seed": int,
}


@dataclass(frozen=True)
class Inputs:
    """The runs and data one evaluation reads, resolved by the evaluate task.

    Attributes
    ----------
    store : RunStore
        Where the runs and their lineages are.
    runs : Mapping[str, RunRecord]
        The run-ID keys given (``features_id`` ...) and their complete runs, each of the stage the
        evaluation's ``parents`` names.
    images : EmbeddedDataset or None
        The labelled dataset through a model, for an evaluation that reads one (``reads_images``).
    """

    store: RunStore
    runs: Mapping[str, RunRecord] = field(default_factory=dict)
    images: EmbeddedDataset | None = None

    def run(self, key: str) -> RunRecord | None:
        """The run given as ``key`` (e.g. ``features_id``), or None."""
        return self.runs.get(key)


class Evaluation(ABC):
    """One evaluation: its settings (the constructor's arguments: the ``eval`` config) and its inputs.

    A subclass declares, as class attributes, what the evaluate stage needs to run it as a run of the
    store: ``name``, ``parents`` (the run-ID keys of the evaluate config it reads, each with the stage
    that run must be of), ``required`` (those that must be given), ``reads_images`` (whether, given
    no features run, it reads a labelled dataset through a model) and ``headline`` (its headline metric,
    a key of its metrics, which ``evaluate.py`` returns for Hydra sweepers). :meth:`result_keys` lists the config
    keys that define its result.

    Parameters
    ----------
    seed
        Seeds every random choice (folds, samples, maps).
    dpi
        Resolution of the PNG figures.
    """

    name: ClassVar[str]
    parents: ClassVar[Mapping[str, str]]
    required: ClassVar[tuple[str, ...]] = ()
    reads_images: ClassVar[bool] = False
    headline: ClassVar[str]

    def __init__(self, seed: int, dpi: int) -> None:
        self.seed = seed
        self.dpi = dpi

    @classmethod
    def result_keys(cls) -> dict[str, Any]:
        """Keys of the evaluate config that define this evaluation's result, hence its run ID.

        ``eval`` (every setting of the evaluation, with the catalogue and seed it interpolates), the model
        and dataset settings when it reads images, and its run-ID keys. What only changes how fast or
        where a result is computed (``batch_size``, ``device``) is left out by ``the evaluate stage's declaration``.
        """
        return {
            "eval": Built,
            **(MODEL_SETTINGS if cls.reads_images else {}),
            **dict.fromkeys(cls.parents, str),
        }

    @classmethod
    def check_inputs(cls, given: Collection[str]) -> None:
        """Refuse run-ID keys this evaluation does not read, and missing required ones.

        Parameters
        ----------
        given
            The run-ID keys set (non-null) in the evaluate config.
        """
        for key in cls.required:
            if key not in given:
                raise RadioCurationError(f"eval={cls.name} needs {key}=<run ID>")
        extra = [key for key in given if key not in cls.parents]
        if extra:
            raise RadioCurationError(
                f"eval={cls.name} reads {', '.join(cls.parents)}, not {', '.join(extra)}: leave "
                f"{' and '.join(extra)} out"
            )

    def run(self, run: RunHandle, inputs: Inputs) -> None:
        """Evaluate ``inputs``, writing into ``run``'s directory."""
        self.evaluate(Outputs(run, self.name, self.dpi), inputs)

    @abstractmethod
    def evaluate(self, out: Outputs, inputs: Inputs) -> None:
        """Compute the evaluation and write its figures and ``metrics.json`` through ``out``."""
