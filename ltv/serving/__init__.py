"""Serving contract of the registered model: request coercion/validation and the hand-written signature."""

from ltv.serving.coerce import InputError, frame_to_table

__all__ = ["InputError", "frame_to_table"]
