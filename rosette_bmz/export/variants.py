"""The three package variants: what the exported network reads (2 channels, outlines or labels)."""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import INPUT_KINDS

__all__ = ["Variant", "VARIANTS", "BIAPY_NOTE", "variant_for"]


@dataclass(frozen=True)
class Variant:
    kind: str
    callable: str
    input_id: str
    channel_names: tuple[str, ...]
    description: str
    title: str


VARIANTS = {
    "channels": Variant(
        "channels", "AttentionUNet", "boundaries", ("thick_boundaries", "outlines"),
        "2 binary channels from cell outlines: find_boundaries(outlines, mode='thick'), outlines "
        "(see README)",
        "two binary boundary channels"),
    "outlines": Variant(
        "outlines", "OutlinesAttentionUNet", "outlines", ("outlines",),
        "binary cell-outline image (value > 0 = line); the 2 input channels are built in the network",
        "a binary outline image (1 channel)"),
    "labels": Variant(
        "labels", "LabelsAttentionUNet", "labels", ("labels",),
        "cell label image (0 = background); outlines and the 2 input channels are built in the network",
        "a cell label image (1 channel)"),
}
for _v in VARIANTS.values():
    assert len(_v.description) <= 128, _v.description


BIAPY_NOTE = {
    "outlines": (" BiaPy ignores `ensure_dtype` and z-scores the image itself; that keeps every line "
                 "pixel above zero and the background below, so the output is unchanged (measured: "
                 "identical)."),
    "labels": (" **Not for BiaPy:** BiaPy ignores `ensure_dtype` and z-scores the image itself, which "
               "moves every label below the mean label number below zero, so those cells lose their "
               "outlines and the output is wrong. In BiaPy use the 2-channel or the outlines package; "
               "bioimageio.core, ilastik and deepImageJ apply the declared preprocessing exactly."),
}


def variant_for(input_kind: str) -> Variant:
    """The variant reading ``input_kind``; ``ValueError`` names the choices."""
    if input_kind not in VARIANTS:
        raise ValueError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    return VARIANTS[input_kind]
