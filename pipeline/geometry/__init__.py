"""Affine helpers, sphere fit and head frame, the side rule, meshes: geometry in RAS millimetres,
used by every stage."""
