"""Training of the rosette Attention U-Net: the published recipe, demo weights, fine-tuning.

    rosette-bmz train --config training/configs/published.yaml --images DIR --masks DIR
    rosette-bmz train --init rdf.yaml --images DIR --masks DIR        # human-in-the-loop fine-tuning

See :mod:`training.config` (every setting, with the published values), :mod:`training.data`
(sources, crop sampler, augmentation) and :mod:`training.train` (the loop).
"""

from __future__ import annotations

__all__ = ["TrainConfig", "load_config"]


def __getattr__(name: str):
    if name in ("TrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
