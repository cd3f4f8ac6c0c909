"""Geometry, the lowest layer: volumes with an LPS affine, the anatomical view, masks."""
