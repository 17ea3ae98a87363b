"""Backbones: model factories, checkpoint loading, feature taps and the ``backbone.pt`` export."""

from __future__ import annotations

from typing import Any

from radio_curation.errors import instantiate_user


def build_backbone(node: Any) -> Any:
    """The :class:`~radio_curation.backbones.extractor.FeatureExtractor` a ``backbone`` config describes."""
    return instantiate_user(node)
