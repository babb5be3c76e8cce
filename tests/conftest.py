import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """Two small synthetic images with their ground truth, as `rosette-bmz synth` writes them."""
    from rosette_bmz.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, n=2, size=192, seed=3, noise=0.3, progress=False, n_rosettes=3, n_decoys=2)
    return out


@pytest.fixture(scope="session")
def tiny_state():
    """A tiny (base 4) AttentionUNet state dict with non-trivial BN statistics, fixed seed."""
    import torch

    from rosette_bmz.model import AttentionUNet

    torch.manual_seed(0)
    model = AttentionUNet(base_channels=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(autouse=True, scope="session")
def _plain_log_records():
    """Keep logging's own LogRecord for the session.

    napari's pytest plugin (installed with the napari extra) turns every log argument that is not a
    Python int/float into a string for the whole session, so ``%d`` / ``%.2f`` with a numpy scalar
    would fail to format in every other test's log messages.
    """
    import logging

    logging.setLogRecordFactory(logging.LogRecord)
    yield
