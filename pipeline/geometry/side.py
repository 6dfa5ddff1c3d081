"""Which hip: the side read from the anatomy, checked against the side the user gave.

A wrong ``--side`` mirrors the head frame (lateral becomes medial), so every JIC zone, type and
arc comes out wrong with no error. The anatomy tells the side wherever the proximal femur or the
acetabulum is in view: the femoral neck runs laterally from the head (toward +x, the patient's
right, for a right hip), and the acetabulum covers the head from the medial side. Those two are
the *anatomical* cues and a contradiction with them is refused. The head's position in scanner
coordinates (x = 0 lies near the patient's midline, hips 80-100 mm from it) is a weaker cue: a
re-centred or reset origin moves it, so it can only warn.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.affine import mask_points_mm

SIDES = ("left", "right")


def check_side(side: str) -> str:
    """``side`` itself when it is "left" or "right", else InputError."""
    if side not in SIDES:
        raise InputError(f"side must be left or right, not {side!r}")
    return side


def side_of_x(x: float, midline_x: float = 0.0, margin_mm: float = 0.0) -> str | None:
    """The one "which side" rule: the side of the body that RAS ``x`` lies on, seen from ``midline_x``.

    "right" when x > midline_x + margin_mm, "left" when x < midline_x - margin_mm, None in between
    (too near the midline to tell). RAS x grows toward the patient's *Right* (the R of RAS; the
    readers turn LPS files, whose +x is the patient's left, into RAS), so the patient's right hip
    lies at greater x than the left one, whatever the scanner's origin, and a direction with a
    positive x-component points to the patient's right.

    Every "which hip" question asks this function:

    * which of two hips in one image is the requested one (``midline_x`` half-way between them):
      :func:`pipeline.geometry.frame.select_side`, :func:`pipeline.segment.femur.choose_head`;
    * which side a head centre lies on in scanner coordinates (``midline_x`` = 0: the table
      centres the patient, so x = 0 lies near the midline and the hips 80-100 mm from it;
      ``margin_mm`` = ``longitudinal.side_offset_mm``): :func:`position_cue`,
      :func:`pipeline.longitudinal.change.check_same_hip`;
    * which side a direction points to (the neck axis runs laterally, the acetabulum lies medial
      of the head): :func:`neck_cue`, :func:`acetabulum_cue`.
    """
    d = float(x) - float(midline_x)
    if d > margin_mm:
        return "right"
    if d < -margin_mm:
        return "left"
    return None


def neck_cue(neck_axis, source: str, settings: Settings) -> dict:
    """The side the neck runs to: its axis' x-component beyond ``side.min_neck_lateral``."""
    n = np.asarray(neck_axis, dtype=np.float64)
    lateral = float(n[0])
    found = side_of_x(lateral) if abs(lateral) >= settings.side.min_neck_lateral else None
    return {"cue": f"femoral neck ({source})", "side": found, "neck_axis_ras": [round(float(v), 3) for v in n],
            "why": f"the neck runs toward {'+' if lateral > 0 else '-'}x (x-component {lateral:+.2f})"}


def acetabulum_cue(acetabulum: np.ndarray, affine: np.ndarray, center, radius: float,
                   settings: Settings) -> dict | None:
    """The side whose socket the acetabulum is: its bone within 20 mm of the head lies medial.

    None when no acetabular bone lies near the head.
    """
    pts = mask_points_mm(acetabulum, affine) - np.asarray(center, dtype=np.float64)
    near = pts[np.linalg.norm(pts, axis=1) <= radius + 20.0]
    if len(near) < 20:
        return None
    dx = float(near[:, 0].mean())
    found = side_of_x(-dx) if abs(dx) >= settings.side.min_acetabulum_offset * radius else None
    return {"cue": "acetabulum", "side": found, "offset_x_mm": round(dx, 2),
            "why": f"the acetabulum lies at {'+' if dx > 0 else '-'}x of the head centre ({dx:+.1f} mm), medial"}


def position_cue(center, settings: Settings) -> dict | None:
    """The side of the body the head centre lies on in scanner coordinates (weak: warns only)."""
    x = float(center[0])
    found = side_of_x(x, margin_mm=settings.longitudinal.side_offset_mm)
    if found is None:
        return None
    return {"cue": "position (scanner x)", "side": found,
            "why": f"the head centre lies at x = {x:.1f} mm, on the patient's {found}"}


def read_side(scan, center, radius: float, settings: Settings, neck_axis=None, neck_source: str = "femur mask",
              acetabulum: np.ndarray | None = None) -> list[dict]:
    """Every cue to the hip's side that can be read: femoral neck, acetabulum, position.

    Parameters
    ----------
    scan : Scan
        The image (its T1 marrow gives the neck when ``neck_axis`` is not known).
    center, radius : head sphere, RAS mm and mm
    settings : Settings
    neck_axis : (3,) unit vector, optional
        Already known (a femur mask's head isolation, the automatic segmentation).
    acetabulum : ndarray of bool, optional
        Acetabulum / hip-bone mask on ``scan``'s grid.

    Returns
    -------
    list of dict
        One per cue read: ``cue``, ``side`` ("left", "right" or None when it cannot tell), ``why``.
    """
    cues = []
    if neck_axis is None and settings.side.read_neck_from_image:
        from pipeline.segment import neck_axis_from_image

        try:
            neck_axis = neck_axis_from_image(scan, center, radius, settings)
            neck_source = "image marrow"
        except InputError:
            neck_axis = None  # no bright marrow around the head (another contrast, CT): no cue
    if neck_axis is not None:
        cues.append(neck_cue(neck_axis, neck_source, settings))
    if acetabulum is not None and np.any(acetabulum):
        cue = acetabulum_cue(acetabulum, scan.affine, center, radius, settings)
        if cue is not None:
            cues.append(cue)
    cue = position_cue(center, settings)
    if cue is not None:
        cues.append(cue)
    return cues


def confirm_side(side: str, cues: list[dict], settings: Settings) -> tuple[dict, list[str]]:
    """Check ``side`` against the cues; return the ``side_check`` record and warnings.

    The anatomical cues (neck, acetabulum) decide; when they agree on the other side the input is
    refused, unless ``side.on_contradiction`` is "warn" (``--trust-side``). The position cue only
    warns, and only when no anatomical cue could be read.

    Raises
    ------
    InputError
        The anatomy shows the other hip.
    """
    check_side(side)
    anatomical = [c for c in cues if c["side"] is not None and not c["cue"].startswith("position")]
    found_sides = {c["side"] for c in anatomical}
    found = found_sides.pop() if len(found_sides) == 1 else None
    warnings: list[str] = []
    if found is None and anatomical:
        status = "not confirmed: the anatomical cues disagree"
        warnings.append("hip side not confirmed: " + "; ".join(f"{c['cue']} says {c['side']}" for c in anatomical))
    elif found is None:
        status = "not confirmed: no femoral neck or acetabulum could be read"
        position = [c for c in cues if c["cue"].startswith("position") and c["side"] != side]
        if position:
            warnings.append(f"--side {side}, but {position[0]['why']} (the anatomy could not confirm the side): "
                            "check it")
    elif found == side:
        status = "confirmed"
    else:
        why = "; ".join(c["why"] for c in anatomical)
        if settings.side.on_contradiction == "refuse":
            raise InputError(f"--side {side} contradicts the anatomy, which shows a {found} hip ({why}): check "
                             "--side (or give --trust-side if the anatomy is misread)")
        status = f"contradicted: the anatomy shows a {found} hip; kept as given (trust-side)"
        warnings.append(f"--side {side} kept against the anatomy, which shows a {found} hip ({why})")
    return {"given": side, "found": found, "status": status, "cues": cues}, warnings
