from __future__ import annotations

import pytest
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from radio_curation.ssl.checkpoint_io import AtomicCheckpointIO


def test_a_save_cut_short_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 5}, last)
    assert io.load_checkpoint(last)["global_step"] == 5

    def killed_mid_write(self, checkpoint, path, storage_options=None):
        path.write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 10}, last)
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
