"""Training monitors: RankMe, online kNN, the trackers bridge."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radio_curation.errors import RadioCurationError
from radio_curation.ssl.monitor import OnlineKNN, TrackerLogger, rankme


@pytest.mark.parametrize("k", [1, 4, 16])
def test_rankme_of_rank_k_data_is_about_k(k):
    torch.manual_seed(0)
    z = torch.randn(2000, k) @ torch.linalg.qr(torch.randn(64, 64))[0][:k]
    assert rankme(z) == pytest.approx(k, rel=0.1)


def test_rankme_of_collapsed_embeddings_is_one():
    z = torch.ones(100, 32) * torch.randn(1, 32)
    assert rankme(z) == pytest.approx(1.0, abs=1e-3)


class _Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def _clusters(n: int, separable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    labels = torch.arange(n) % 2
    centres = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    x = torch.randn(n, 4) + (centres[labels] if separable else 0)
    return x.reshape(n, 1, 2, 2), labels


def test_online_knn_is_perfect_on_separable_classes_and_chance_on_random_ones():
    images, labels = _clusters(200, separable=True)
    assert OnlineKNN(images, labels, nn.Identity(), k=5).accuracy(_Identity(), torch.device("cpu")) == 1.0
    images, labels = _clusters(400, separable=False)
    acc = OnlineKNN(images, labels, nn.Identity(), k=5).accuracy(_Identity(), torch.device("cpu"))
    assert 0.3 < acc < 0.7


def test_online_knn_uses_the_given_split_and_restores_train_mode():
    images, labels = _clusters(40, separable=True)
    mask = torch.arange(40) < 30
    knn = OnlineKNN(images, labels, nn.Identity(), train_mask=mask, k=3)
    backbone = _Identity().train()
    assert knn.accuracy(backbone, torch.device("cpu")) == 1.0
    assert backbone.training
    with pytest.raises(RadioCurationError, match="bank"):
        OnlineKNN(images, labels, nn.Identity(), train_mask=torch.ones(40, dtype=torch.bool))


def test_tracker_logger_forwards_numeric_metrics_with_their_step():
    class Recorder:
        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step=None):
            self.calls.append((metrics, step))

    recorder = Recorder()
    logger = TrackerLogger(recorder, "train-abc")
    logger.log_metrics({"train/loss": torch.tensor(0.5), "epoch": 3, "name": "x"}, step=7)
    assert recorder.calls == [({"train/loss": 0.5, "epoch": 3.0}, 7)]
    assert logger.version == "train-abc"
