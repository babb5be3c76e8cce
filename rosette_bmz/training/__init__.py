"""Training of the rosette Attention U-Net: the published recipe, demo weights, fine-tuning.

    rosette-bmz train --config published --images DIR --masks DIR     # configs ship in configs/
    rosette-bmz train --init rdf.yaml --images DIR --masks DIR        # human-in-the-loop fine-tuning

See :mod:`.config` (every setting, with the published values; the YAML files in ``configs/``),
:mod:`.data` (sources, crop sampler, augmentation) and :mod:`.train` (the loop).
"""

from __future__ import annotations

__all__ = ["TrainConfig", "load_config"]


def __getattr__(name: str):
    if name in ("TrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'rosette_bmz.training' has no attribute {name!r}")
