"""Femoral-head osteonecrosis MRI volumetry (the `onfh` program).

Every quantity is defined in docs/method.md; module names follow its sections:
`scan` (loading, geometry), `measure` (volumes, fraction, size class), `mesh` (marching cubes),
`frame` (head frame), `config` (settings), `cli` (the program).
"""

__version__ = "0.1.0"
