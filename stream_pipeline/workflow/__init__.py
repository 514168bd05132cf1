"""Roboflow workflow JSON → what a pipeline runs."""

from stream_pipeline.workflow.blocks import BLOCKS
from stream_pipeline.workflow.definition import BoundWorkflow, Workflow, load_workflow

__all__ = ["BLOCKS", "BoundWorkflow", "Workflow", "load_workflow"]
