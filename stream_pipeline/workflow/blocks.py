"""The workflow blocks this package runs, with their fields and outputs.

Type identifiers are Roboflow's. Fields are checked as the block checks them; any other block type
is an error that lists these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLOCKS", "SEGMENTATION_TYPES", "VISUALIZATION_TYPES", "BlockSpec"]


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """A supported block: its fields (and which take ``$inputs`` selectors) and its outputs."""

    type: str
    kind: str  # "segmentation" | "visualization"
    fields: frozenset[str]
    bindable: frozenset[str]
    outputs: frozenset[str]
    version: int = 2


_SEG_OUTPUTS = frozenset({"inference_id", "predictions", "model_id"})

SEGMENTATION_TYPES = (
    "roboflow_core/roboflow_semantic_segmentation_model@v1",
    "roboflow_core/roboflow_semantic_segmentation_model@v2",
)
VISUALIZATION_TYPES = ("roboflow_core/mask_visualization@v1",)

BLOCKS: dict[str, BlockSpec] = {
    SEGMENTATION_TYPES[0]: BlockSpec(
        SEGMENTATION_TYPES[0],
        "segmentation",
        frozenset({"images", "model_id"}),
        frozenset({"model_id"}),
        _SEG_OUTPUTS,
        version=1,
    ),
    SEGMENTATION_TYPES[1]: BlockSpec(
        SEGMENTATION_TYPES[1],
        "segmentation",
        frozenset({"images", "model_id", "confidence_mode", "custom_confidence"}),
        frozenset({"model_id", "confidence_mode", "custom_confidence"}),
        _SEG_OUTPUTS,
    ),
    VISUALIZATION_TYPES[0]: BlockSpec(
        VISUALIZATION_TYPES[0],
        "visualization",
        frozenset(
            {
                "image",
                "predictions",
                "copy_image",
                "color_palette",
                "palette_size",
                "custom_colors",
                "color_axis",
                "opacity",
            }
        ),
        frozenset({"opacity", "copy_image"}),
        frozenset({"image"}),
    ),
}
