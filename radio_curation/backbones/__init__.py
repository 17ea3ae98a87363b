"""Backbones: model factories, checkpoint loading, feature taps and the ``backbone.pt`` export."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from radio_curation.errors import RadioCurationError


def instantiate_user(node: Any) -> Any:
    """``hydra.utils.instantiate(node)``, re-raising a user mistake as the :class:`RadioCurationError` itself.

    Hydra wraps whatever the target raises in an ``InstantiationException``; the message the factory
    wrote for the user (bad checkpoint, wrong module name, wrong run ID) is the one to show.
    """
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, RadioCurationError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from err
        raise


def build_backbone(node: Any) -> Any:
    """The :class:`~radio_curation.backbones.extractor.FeatureExtractor` a ``backbone`` config describes."""
    return instantiate_user(node)
