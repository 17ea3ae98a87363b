"""A backbone with a feature tap: any named module's output, pooled to one vector per image."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError

POOLINGS = ("cls", "mean", "cls_mean", "flatten")


class _TapReached(Exception):
    """Raised by the tap's hook to stop the forward pass once the tapped module has run."""


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "last_hidden_state") and output.last_hidden_state is not None:
        return output.last_hidden_state
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise RadioCurationError(f"the tapped output is a {type(output).__name__} with no tensor in it")


def pool(features: Tensor, pooling: str | None, num_prefix_tokens: int = 1) -> Tensor:
    """Reduce a tapped output to ``[B, D]``.

    Parameters
    ----------
    features
        ``[B, D]`` (returned as is), tokens ``[B, T, D]`` or a feature map ``[B, C, H, W]``.
    pooling
        ``cls`` (first token), ``mean`` (mean of the patch tokens after the ``num_prefix_tokens`` class and
        register tokens, or of a feature map over H, W), ``cls_mean`` (both, concatenated), ``flatten``.
        None: ``cls`` for tokens, ``flatten`` otherwise (a ResNet's ``avgpool`` gives ``[B, C, 1, 1]``).
    num_prefix_tokens
        Class and register tokens at the start of a token sequence.
    """
    if features.ndim == 2:
        return features
    if features.ndim == 3:
        pooling = pooling or "cls"
        if pooling == "cls":
            return features[:, 0]
        if pooling == "mean":
            return features[:, num_prefix_tokens:].mean(dim=1)
        if pooling == "cls_mean":
            return torch.cat([features[:, 0], features[:, num_prefix_tokens:].mean(dim=1)], dim=1)
        return features.flatten(1)
    pooling = pooling or "flatten"
    if pooling in ("cls", "cls_mean"):
        raise RadioCurationError(
            f"backbone.pooling={pooling} needs a token output [B, T, D], but the tap gives "
            f"{list(features.shape)}; use pooling=mean or flatten"
        )
    if pooling == "mean":
        return features.flatten(2).mean(dim=2)
    return features.flatten(1)


class FeatureExtractor(nn.Module):
    """``forward(x [B, in_chans, H, W]) -> [B, feature_dim]``: the tapped module's output, pooled.

    Without ``module_name`` the features are the model's own pooled output (timm and torchvision models
    are built without a classifier; a transformers model gives ``last_hidden_state``). With it, a forward
    hook captures that module's output and the rest of the network is skipped.

    Parameters
    ----------
    model
        The network.
    spec
        A plain dict that rebuilds the architecture without weights
        (:func:`radio_curation.backbones.factory.build_architecture`); saved by ``save_backbone``.
    in_chans
        Input channels the model takes (1 or 3).
    module_name
        A name from ``model.named_modules()`` (``avgpool``, ``layernorm``, ``blocks.11`` ...), or None.
    pooling
        See :func:`pool`.
    num_prefix_tokens
        Class and register tokens in the model's token sequences.
    input_size
        The image side used to probe the output width (``feature_dim``).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        in_chans: int,
        module_name: str | None = None,
        pooling: str | None = None,
        num_prefix_tokens: int = 1,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if pooling is not None and pooling not in POOLINGS:
            raise RadioCurationError(
                f"backbone.pooling must be one of {', '.join(POOLINGS)} or null, got {pooling!r}"
            )
        self.model = model
        self.spec = spec
        self.in_chans = int(in_chans)
        self.module_name = module_name or None
        self.pooling = pooling
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.input_size = int(input_size)
        self._hf = spec.get("kind") == "hf"
        self._hf_kwargs = (
            {"interpolate_pos_encoding": True}
            if self._hf and "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
            else {}
        )
        if self.module_name is not None:
            modules = dict(model.named_modules())
            if self.module_name not in modules:
                raise RadioCurationError(self._unknown_module_message(list(modules)))
        self.feature_dim = self._probe()

    @property
    def tap(self) -> str:
        """The tapped module's name, or ``output`` for the model's own output."""
        return self.module_name or "output"

    def _unknown_module_message(self, names: list[str]) -> str:
        named = [n for n in names if n]
        close = difflib.get_close_matches(self.module_name, named, n=8, cutoff=0.3)
        top = [n for n in named if "." not in n]
        return (
            f"backbone.module_name={self.module_name!r} is not a module of this "
            f"{type(self.model).__name__}. Closest names: {', '.join(close) or 'none'}. "
            f"Top-level modules: {', '.join(top)}. "
            "List them all with `print(dict(model.named_modules()).keys())`."
        )

    def _run_model(self, x: Tensor) -> Any:
        if self._hf:
            return self.model(pixel_values=x, **self._hf_kwargs)
        return self.model(x)

    def _tapped(self, x: Tensor) -> Tensor:
        if self.module_name is None:
            return _first_tensor(self._run_model(x))
        captured: list[Any] = []

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output)
            raise _TapReached

        handle = self.model.get_submodule(self.module_name).register_forward_hook(hook)
        try:
            self._run_model(x)
        except _TapReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RadioCurationError(f"module {self.module_name!r} did not run in the forward pass")
        return _first_tensor(captured[0])

    def forward(self, x: Tensor) -> Tensor:
        """Features ``[B, feature_dim]`` of images ``[B, in_chans, H, W]``."""
        return pool(self._tapped(x), self.pooling, self.num_prefix_tokens)

    def _probe(self) -> int:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                param = next(self.model.parameters(), None)
                device = param.device if param is not None else torch.device("cpu")
                sample = torch.zeros(2, self.in_chans, self.input_size, self.input_size, device=device)
                out = self(sample)
        finally:
            self.train(was_training)
        if out.ndim != 2:
            raise RadioCurationError(f"the tap {self.tap} gives {list(out.shape)}, not [B, D]")
        return int(out.shape[1])

    def extra_repr(self) -> str:
        return f"tap={self.tap}, pooling={self.pooling}, in_chans={self.in_chans}, feature_dim={self.feature_dim}"
