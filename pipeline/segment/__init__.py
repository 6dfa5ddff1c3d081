"""Automatic segmentation of one hip on T1 MRI: femoral head, lesion, acetabulum (issue #4).

Classical image analysis, no trained weights: bias-robust normalisation, a Hough vote for the
marrow ball, a robust sphere fit, marrow connectivity for the lesion enclosed by its dark band,
and pelvic-marrow components for the acetabulum. The algorithm, step by step with its settings
(``segmentation`` in configs/default.yaml), is in docs/segmentation.md.

Everything runs on the scan's canonical array through its affine (world millimetres), so any
storage order gives the same masks and oblique scans stay exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.affine import bounding_box, box_start, mm_to_index, shifted_affine
from pipeline.geometry.frame import neck_direction
from pipeline.geometry.side import check_side
from pipeline.io.scan import Scan
from pipeline.segment import acetabulum as _acetabulum
from pipeline.segment import femur as _femur
from pipeline.segment import grid
from pipeline.segment import lesion as _lesion

__all__ = ["SegmentationResult", "neck_axis_from_image", "segment_hip"]


@dataclass
class SegmentationResult:
    """Masks of one hip on the scan's canonical grid, with what a reviewer needs to trust them.

    Attributes
    ----------
    head, lesion, femur : ndarray of bool
        Femoral head (lesion included, docs/method.md neck-plane rule), lesion, proximal femur in the
        head crop.
    acetabulum : ndarray of bool or None
        Approximate acetabular bone over the head (for ``location.find_acetabular_roof``); None
        when no pelvic marrow was found (the default span is then used, with a warning).
    confidence : dict
        ``status`` ("ok" or "review"), ``flags`` (why to review), and the QC figures: sphere-fit
        RMS (mm), surface coverage, band contrast, lesion touching the ROI or crop edge...
    parameters : dict
        The segmentation settings used, seeds and ROI.
    warnings : list of str
    """

    head: np.ndarray
    lesion: np.ndarray
    femur: np.ndarray
    acetabulum: np.ndarray | None
    confidence: dict
    parameters: dict
    warnings: list = field(default_factory=list)

    def record(self) -> dict:
        """The ``segmentation`` entry of metrics.json."""
        return {"method": "automatic", "parameters": self.parameters, "confidence": self.confidence}


def segment_hip(scan: Scan, side: str, settings: Settings | None = None, seeds=None, roi=None) -> SegmentationResult:
    """Segment the femoral head, the necrotic lesion and the acetabulum of one hip.

    Parameters
    ----------
    scan : Scan
        T1-weighted image (canonical order, RAS-mm affine; any storage order or obliquity).
    side : {"right", "left"}
        The patient's hip: with both hips in view, right is the head at the greater RAS x.
    settings : Settings, optional
        ``settings.segmentation`` holds every parameter.
    seeds : sequence of (3,) RAS mm, optional
        Points inside the lesion (``--lesion-seed``): the lesion is the enclosed region holding
        them, and the head is the one nearest them.
    roi : (6,) RAS mm, optional
        Box (x0, y0, z0, x1, y1, z1) (``--roi``): the head centre must lie inside and the lesion
        is kept inside it.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    InputError
        No femoral head in view ("no femoral head found ..."), or only the other hip.
    """
    started = time.perf_counter()
    settings = settings or Settings()
    s = settings.segmentation
    check_side(side)
    seeds, roi = _request(seeds, roi)
    warnings: list[str] = []
    data = np.asarray(scan.data, dtype=np.float32)
    affine = scan.affine

    # 1-3: whole-image search on a coarse, bias-normalised grid
    bias, a_c, candidates, chosen = _search_heads(data, affine, side, settings, roi, seeds)
    t_search = time.perf_counter() - started

    # 4: fine crop, bias-normalised and scaled to the head's own marrow signal; the marrow sphere
    r_guess = float(chosen["marrow_radius_mm"])
    crop, native_aff, norm_w, marrow_level, norm_n = _head_crop(data, affine, bias, a_c, chosen["centre"], r_guess, s,
                                                                with_native=True)
    fit, coverage = _fit_head(norm_w, crop, affine, chosen["centre"], r_guess, settings)
    centre, r_m = fit.center, fit.radius
    radius = r_m + s.cortex_offset_mm

    # 5-6: healthy marrow, femur, neck-plane head
    femur_w, bright = _femur_in_crop(norm_w, crop, centre, r_m, radius, settings)
    n, rho, cut = _neck_plane(femur_w, crop, centre, radius, side, s, warnings)
    head_w = _femur.head_on_grid(crop.shape, crop.affine, centre, radius, n, cut)
    # a collapsed dome: the surface where the image shows it inside the sphere (issue 15)
    surface, dinfo = None, None
    if s.dome_surface:
        # read on the scan's own samples (trilinear), not the smoothed working grid: a blurred
        # thin cortex moves its outer edge outward
        surface, dinfo = _femur.dome_surface(norm_n, native_aff, affine, centre, radius, n, cut, settings)

    # lesion (lesion.py) and acetabulum (acetabulum.py)
    healthy = _healthy_head_marrow(norm_w, crop, head_w, centre, r_m, scan.slice_thickness_mm, s)
    lesion_w, linfo = _lesion.lesion_mask(head_w, healthy, crop, centre, radius, settings, seeds=seeds, roi=roi,
                                          warnings=warnings)
    # a core-decompression drill track is a tube of fluid/granulation tissue, not necrosis
    track_w, linfo["drill_track"] = _lesion.drill_track(head_w, healthy, lesion_w, norm_w, crop, centre, r_m,
                                                        settings, bone=femur_w)
    lesion_w &= ~track_w
    lesion_w = _lesion.refine_margin(lesion_w, healthy, norm_w, head_w, crop, centre, r_m, settings, linfo,
                                     exclude=track_w)
    acet_w, ainfo, bulk_w = _acetabulum.acetabulum_mask(bright, femur_w, crop, centre, radius, settings, side)

    # back to the native grid: head by voxel centre, the rest by the half-voxel rule
    head, lesion, femur, acet = _to_native(scan.shape, crop, native_aff, centre, radius, n, cut,
                                           lesion_w, femur_w, acet_w, surface=surface)
    acet = _acetabulum_on_scan_grid(acet, bulk_w, crop, affine, centre, radius, side, settings, ainfo)
    warnings += _acetabulum_warnings(acet, ainfo)

    # QC
    contrast = _lesion.band_contrast(norm_w, lesion_w, healthy, crop.spacing)
    flags = _qc_flags(scan, s, fit, coverage, contrast, head, lesion, lesion_w, crop, roi, acet, ainfo, candidates,
                      chosen)
    share = (dinfo or {}).get("top_edges_found_share")
    if share is not None and share < s.dome_min_top_share:
        # the dome's surface is read only where these slices resolve its cortex: elsewhere the
        # sphere stands, and a collapse there reads "none"
        flags.append(f"dome surface found along only {100 * share:.0f} % of the lines over its top on these slices: "
                     "the automatic head may miss a collapse there (check the dome, or import a drawn head)")
    seconds = {"search": round(t_search, 2), "total": round(time.perf_counter() - started, 2)}
    confidence = _confidence_record(flags, fit, coverage, radius, n, rho, contrast, marrow_level, chosen, candidates,
                                    linfo, ainfo, seconds)
    confidence["dome_surface"] = dinfo
    parameters = {**s.model_dump(mode="json"), "lesion_seeds_ras_mm": [list(p) for p in seeds] or None,
                  "roi_ras_mm": list(roi) if roi is not None else None,
                  "working_voxel_mm_used": [float(x) for x in crop.spacing]}
    return SegmentationResult(head, lesion, femur, acet if acet.any() else None, confidence, parameters, warnings)


def _request(seeds, roi):
    """The lesion seeds and the ROI as floats; an ROI that is no box is refused.

    Parameters
    ----------
    seeds : sequence of (3,) or None
        Points inside the lesion, RAS mm.
    roi : (6,) or None
        Box (x0, y0, z0, x1, y1, z1), RAS mm.

    Returns
    -------
    seeds : list of tuple
    roi : tuple of 6 floats or None

    Raises
    ------
    InputError
        An ROI without six numbers or with an empty extent.
    """
    seeds = [tuple(float(v) for v in p) for p in (seeds or [])]
    if roi is not None:
        roi = tuple(float(v) for v in roi)
        if len(roi) != 6 or any(lo >= hi for lo, hi in zip(roi[:3], roi[3:])):
            raise InputError(f"--roi expects X0,Y0,Z0,X1,Y1,Z1 with X0 < X1, Y0 < Y1, Z0 < Z1 (RAS mm), got {roi}")
    return seeds, roi


def _search_heads(data: np.ndarray, affine: np.ndarray, side: str, settings: Settings, roi, seeds):
    """Steps 1-3: head candidates on the coarse, bias-normalised grid, verified, and the one chosen.

    Parameters
    ----------
    data : ndarray, shape (I, J, K)
        The T1 image (canonical order).
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    side : {"right", "left"}
    settings : Settings
    roi, seeds
        As checked by :func:`_request`.

    Returns
    -------
    bias : ndarray
        Bright-tissue bias field on the coarse grid.
    a_c : ndarray, shape (4, 4)
        The coarse grid's affine.
    candidates : list of dict
        Every Hough peak with ``centre``, ``votes`` and its verification (``ok``, ``coverage``...).
    chosen : dict
        The candidate of the requested hip.

    Raises
    ------
    InputError
        No candidate at all.
    """
    s = settings.segmentation
    coarse, a_c = grid.coarse_grid(data, affine, s.coarse_voxel_mm)
    bias = grid.bias_field(coarse, a_c, s.bias_sigma_mm)
    norm_c = coarse / bias
    peaks = _femur.hough_candidates(norm_c, a_c, s.hough_radius_mm, s.hough_candidates)
    candidates = []
    for centre, votes in peaks:
        v = _femur.verify_candidate(norm_c, a_c, centre, settings)
        candidates.append({"centre": np.asarray(centre), "votes": votes, **v})
    if not candidates:
        raise InputError("no femoral head found in the image (no bright ball with a marrow edge)")
    chosen = _femur.choose_head(candidates, side, roi, seeds)
    return bias, a_c, candidates, chosen


def _fit_head(norm_w: np.ndarray, crop: grid.Crop, affine: np.ndarray, centre, r_guess: float, settings: Settings):
    """Step 4: the robust marrow sphere; its radius + the cortex offset must be a plausible head.

    Parameters
    ----------
    norm_w : ndarray
        The head crop on the working grid, scaled to the head's marrow signal.
    crop : grid.Crop
    affine : ndarray, shape (4, 4)
        The scan's own (acquisition) affine.
    centre : (3,) RAS mm
        The chosen candidate's centre.
    r_guess : float
        Its marrow radius, mm.
    settings : Settings

    Returns
    -------
    fit : pipeline.geometry.frame.SphereFit
        Marrow sphere (centre, radius, RMS).
    coverage : float
        Share of sphere directions with a marrow-surface inlier.

    Raises
    ------
    InputError
        A head radius outside ``segmentation.head_radius_mm``.
    """
    s = settings.segmentation
    fit, coverage, _ = _femur.fit_marrow_sphere(norm_w, crop.affine, centre, r_guess, settings,
                                                native_affine=affine)
    radius = fit.radius + s.cortex_offset_mm
    if not s.head_radius_mm[0] <= radius <= s.head_radius_mm[1]:
        raise InputError(f"no femoral head found: fitted radius {radius:.1f} mm is outside {tuple(s.head_radius_mm)}")
    return fit, coverage


def _neck_plane(femur_w: np.ndarray, crop: grid.Crop, centre, radius: float, side: str, s, warnings: list):
    """Step 6: neck axis, waist and cut of the neck-plane head; a neck toward the other side is refused.

    Parameters
    ----------
    femur_w : ndarray of bool
        Proximal femur on the working grid.
    crop : grid.Crop
    centre : (3,) RAS mm
    radius : float
        Head radius, mm.
    side : {"right", "left"}
    s : SegmentationSettings
        ``other_hip_neck_lateral``.
    warnings : list of str
        Appended to.

    Returns
    -------
    n : ndarray, shape (3,)
        Unit neck axis from the head centre.
    rho : float
        Waist radius, mm.
    cut : float
        Distance of the neck plane from the centre along ``n``, mm.

    Raises
    ------
    InputError
        The neck runs toward the other side: the head in view is the other hip.
    """
    n, rho, waist, cut = _femur.neck_plane_head(femur_w, crop, centre, radius, warnings)
    lateral = 1.0 if side == "right" else -1.0
    if lateral * n[0] < s.other_hip_neck_lateral:
        other = "left" if side == "right" else "right"
        raise InputError(
            f"no {side} femoral head found: the head in view (centre x = {centre[0]:.1f} mm) has its neck toward the "
            f"patient's {other}, i.e. it is a {other} hip"
        )
    return n, rho, cut


def _healthy_head_marrow(norm_w: np.ndarray, crop: grid.Crop, head_w: np.ndarray, centre, r_m: float,
                         slice_mm: float, s) -> np.ndarray:
    """Healthy marrow of the head for the lesion test, on the working grid.

    The lesion test uses a stricter marrow level (a band blurred by thick slices stays below it)
    inside the head box only: healthy head marrow is connected within the head.

    Parameters
    ----------
    norm_w : ndarray
        The head crop, scaled to the head's marrow signal.
    crop : grid.Crop
    head_w : ndarray of bool
        The neck-plane head on the working grid.
    centre : (3,) RAS mm
    r_m : float
        Marrow-sphere radius, mm.
    slice_mm : float
        The scan's slice thickness, mm.
    s : SegmentationSettings

    Returns
    -------
    ndarray of bool
        Shape of ``norm_w``; False outside the head box.
    """
    hb = bounding_box(head_w, crop.spacing, margin_mm=s.head_box_margin_mm)
    hb_aff = shifted_affine(crop.affine, box_start(hb))
    # a band lying nearly along thick slices, between two of them, is averaged into both and can
    # vanish from the data over a patch about a slice wide: such holes must not connect either
    band_gap = max(s.gap_mm, s.band_gap_slice_fraction * slice_mm)
    # and a band lying between two slices leaves a patch where the two slices' blend is only a
    # little below marrow: links across slice boundaries need more signal
    slab_cut = _lesion.slab_boundary_cut(norm_w, crop, s.slice_bridge_level)[hb]
    healthy_hb, _ = _femur.healthy_marrow(norm_w[hb], hb_aff, centre, r_m, s.healthy_level, band_gap,
                                          cut=slab_cut)
    healthy = np.zeros_like(head_w)
    healthy[hb] = healthy_hb
    return healthy


def _to_native(full, crop: grid.Crop, native_aff: np.ndarray, centre, radius: float, n, cut: float,
               lesion_w: np.ndarray, femur_w: np.ndarray, acet_w: np.ndarray, surface=None):
    """The masks on the scan's own grid: the head by voxel fraction, the rest by the half-voxel rule.

    Parameters
    ----------
    full : tuple of int
        The scan's shape.
    crop : grid.Crop
    native_aff : ndarray, shape (4, 4)
        Affine of the crop on the scan's own grid.
    centre, radius, n, cut
        The neck-plane head (:func:`_neck_plane`).
    lesion_w, femur_w, acet_w : ndarray of bool
        Lesion, femur and acetabulum on the working grid.

    Returns
    -------
    head, lesion, femur, acet : ndarray of bool
        On the scan's grid; the lesion lies inside the head.
    """
    head = np.zeros(full, dtype=bool)
    head[crop.slices] = _femur.head_fraction_mask(crop.native_shape, native_aff, centre, radius, n, cut,
                                                  surface=surface)
    lesion = np.zeros(full, dtype=bool)
    lesion[crop.slices] = crop.to_native(lesion_w) >= 0.5
    lesion &= head
    femur = np.zeros(full, dtype=bool)
    femur[crop.slices] = crop.to_native(femur_w) >= 0.5
    if surface is not None and surface.depressed:
        # the femur's head ball less what the collapsed dome lost
        ball = _femur.head_fraction_mask(crop.native_shape, native_aff, centre, radius, n, cut)
        femur[crop.slices] &= ~(ball & ~head[crop.slices])
    acet = np.zeros(full, dtype=bool)
    acet[crop.slices] = crop.to_native(acet_w) >= 0.5
    return head, lesion, femur, acet


def _acetabulum_on_scan_grid(acet: np.ndarray, bulk_w, crop, affine, centre, radius: float, side: str, settings,
                             ainfo: dict) -> np.ndarray:
    """The joined acetabulum as the measurement will read it, on the scan's own grid.

    Taken to thick slices by the half-voxel rule, tissue that ran on around the head a voxel apart
    from the roof on the working grid can join it, and the measurement (which reads the edge on
    this grid, :func:`pipeline.measures.location.find_acetabular_roof`) would then put the edge
    far lateral (seed 8808's 4 mm case: 25.6 mm against 17.6 on the working grid, a centre-edge
    angle of 89.5 degrees). Where the two reads differ by more than
    ``acetabulum_edge_tolerance_mm`` the edge is ambiguous: the bulk mask is used instead, as
    when the joined and bulk edges disagree. ``ainfo`` gains ``edge_u_scan_grid_mm``.
    """
    from pipeline.geometry.frame import HeadFrame
    from pipeline.measures.location import find_acetabular_roof

    if ainfo.get("chosen") != "joined" or not acet.any():
        return acet
    frame = HeadFrame(np.asarray(centre, float), float(radius), side)
    u = find_acetabular_roof(acet, affine, frame, settings.location)["edge_u_mm"]
    ainfo["edge_u_scan_grid_mm"] = None if u is None else round(float(u), 2)
    joined = ainfo["edge_u_joined_mm"]
    if u is not None and abs(u - joined) <= settings.segmentation.acetabulum_edge_tolerance_mm:
        return acet
    if bulk_w is None:
        ainfo.update(ambiguous=True)
        return acet
    bulk = np.zeros(acet.shape, dtype=bool)
    bulk[crop.slices] = crop.to_native(bulk_w) >= 0.5
    ainfo.update(chosen="bulk", ambiguous=True)
    return bulk


def _acetabulum_warnings(acet: np.ndarray, ainfo: dict) -> list[str]:
    """Warnings about the acetabulum: not found (default span), or an ambiguous edge.

    Parameters
    ----------
    acet : ndarray of bool
        The acetabulum on the scan's grid.
    ainfo : dict
        From :func:`pipeline.segment.acetabulum.acetabulum_mask`.

    Returns
    -------
    list of str
    """
    warnings = []
    if not acet.any():
        warnings.append("acetabulum not found automatically: the default weight-bearing span is used")
    elif ainfo["ambiguous"] and "edge_u_scan_grid_mm" in ainfo:
        u_scan = ainfo["edge_u_scan_grid_mm"]
        warnings.append(
            "acetabular edge ambiguous: on the scan's slices the acetabulum joins tissue running on around the head "
            f"(edge at u = {'none' if u_scan is None else format(u_scan, '.1f')} mm against "
            f"{ainfo['edge_u_joined_mm']:.1f} mm on the working grid); "
            + ("the edge of the bone bulk is used, possibly a few mm medial: check the JIC span"
               if ainfo["chosen"] == "bulk" else "check the JIC span")
        )
    elif ainfo["ambiguous"]:
        warnings.append(
            "acetabular edge ambiguous: the pelvic marrow joins bright tissue (a fat sheet?) running on around the "
            f"head (edge at u = {ainfo['edge_u_joined_mm']:.1f} mm); the edge of the bone bulk "
            f"(u = {ainfo['edge_u_bulk_mm']:.1f} mm) is used, possibly a few mm medial: check the JIC span"
        )
    return warnings


def _qc_flags(scan: Scan, s, fit, coverage: float, contrast, head: np.ndarray, lesion: np.ndarray,
              lesion_w: np.ndarray, crop: grid.Crop, roi, acet: np.ndarray, ainfo: dict, candidates: list,
              chosen: dict) -> list[str]:
    """Why a reviewer should check the segmentation (empty: status "ok").

    Parameters
    ----------
    scan : Scan
    s : SegmentationSettings
        The QC thresholds.
    fit : pipeline.geometry.frame.SphereFit
        Marrow sphere.
    coverage : float
        Share of sphere directions with a marrow-surface inlier.
    contrast : float or None
        Lesion band contrast (:func:`pipeline.segment.lesion.band_contrast`).
    head, lesion : ndarray of bool
        On the scan's grid.
    lesion_w : ndarray of bool
        The lesion on the working grid (the head crop).
    crop : grid.Crop
    roi : tuple of 6 floats or None
    acet : ndarray of bool
        The acetabulum on the scan's grid.
    ainfo : dict
        From :func:`pipeline.segment.acetabulum.acetabulum_mask`.
    candidates : list of dict
        Every head candidate; ``chosen`` is the one taken.
    chosen : dict

    Returns
    -------
    list of str
    """
    flags = []
    if fit.rms_mm > s.max_sphere_rms_mm:
        flags.append(f"marrow sphere-fit RMS {fit.rms_mm:.2f} mm > {s.max_sphere_rms_mm:g} mm")
    if coverage < s.min_head_coverage:
        flags.append(f"head surface seen over only {100 * coverage:.0f} % of directions")
    if contrast is not None and contrast < s.min_band_contrast:
        flags.append(f"lesion margin contrast {contrast:.2f} < {s.min_band_contrast:g}: boundary uncertain")
    # 5 mm slices can blur the low-signal band enough that a blood-like core joins healthy marrow
    # (held-out phantom: NF 31 points low, no other flag raised): beyond the validated range, say so
    slice_mm = scan.slice_thickness_mm
    if slice_mm > s.max_validated_slice_mm + 1e-6:
        flags.append(f"slices of {slice_mm:.1f} mm exceed the {s.max_validated_slice_mm:g} mm validated "
                     "for the lesion: check its margin")
    if _touches_edge(head):
        flags.append("head cut by the edge of the field of view")
    if lesion_w.any() and _touches_edge(lesion_w):
        flags.append("lesion touches the edge of the head crop")
    if roi is not None and lesion_w.any():
        inside = _lesion.in_box(crop.points(), roi)
        if (lesion_w & ~ndimage.binary_erosion(inside)).any():
            flags.append("lesion touches the ROI edge")
    thick_axis = _thick_non_coronal_axis(scan, s.thick_slice_ratio, s.coronal_tolerance_deg)
    if acet.any() and thick_axis is not None:
        # the roof's thin lateral lip is lost to partial volume across such slices: on axial and
        # sagittal phantoms the edge came out 0.9-5.9 mm medial
        flags.append(f"acetabular edge read across {scan.slice_thickness_mm:.1f} mm {thick_axis} slices: "
                     "it may lie a few mm medial (check the JIC span)")
    if ainfo["ambiguous"]:
        flags.append("acetabular edge ambiguous (bright tissue joins the roof): "
                     + ("the bone-bulk edge is used" if ainfo["chosen"] == "bulk" else "check the JIC span"))
    rivals = [c for c in candidates if c["ok"] and c["votes"] >= s.rival_votes_share * chosen["votes"]]
    if len(rivals) > s.max_head_candidates:
        flags.append(f"more than {_NUMBER_WORDS.get(s.max_head_candidates, s.max_head_candidates)} head-like "
                     "candidates in the image")
    vox_ml = scan.voxel_volume_mm3 / 1000.0
    lesion_ml = float(lesion.sum()) * vox_ml
    if 0 < lesion_ml < s.small_lesion_ml:
        flags.append(f"small lesion ({lesion_ml:.2f} mL): check it is not a mimic")
    return flags


#: Small counts spelled out in QC flags ("more than two head-like candidates").
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _confidence_record(flags: list[str], fit, coverage: float, radius: float, n, rho: float, contrast,
                       marrow_level: float, chosen: dict, candidates: list, linfo: dict, ainfo: dict,
                       seconds: dict) -> dict:
    """The ``confidence`` entry of the segmentation record: status, flags and the QC figures.

    Parameters
    ----------
    flags : list of str
        From :func:`_qc_flags`; any flag makes the status "review".
    fit : pipeline.geometry.frame.SphereFit
        Marrow sphere (centre, radius, RMS).
    coverage : float
    radius : float
        Head (bone surface) radius, mm.
    n : ndarray, shape (3,)
        Neck axis.
    rho : float
        Waist radius, mm.
    contrast : float or None
        Lesion band contrast.
    marrow_level : float
        The head's marrow signal (normalised image).
    chosen : dict
        The head candidate taken.
    candidates : list of dict
        Every candidate.
    linfo, ainfo : dict
        Lesion and acetabulum details.
    seconds : dict
        ``search`` and ``total`` run times, s.

    Returns
    -------
    dict
    """
    return {
        "status": "review" if flags else "ok",
        "flags": flags,
        "sphere_fit_rms_mm": float(fit.rms_mm),
        "surface_coverage": float(coverage),
        "marrow_radius_mm": float(fit.radius),
        "head_radius_mm": float(radius),
        "head_center_ras_mm": [float(x) for x in fit.center],
        "neck_axis": [float(x) for x in n],
        "waist_radius_mm": rho,
        "band_contrast": contrast,
        "marrow_signal": float(marrow_level),
        "hough_votes": float(chosen["votes"]),
        "candidates": [{"centre_ras_mm": [round(float(x), 1) for x in c["centre"]], "ok": bool(c["ok"]),
                        "coverage": round(float(c["coverage"]), 2), "reason": c["reason"]} for c in candidates],
        "lesion_components": linfo["components"],
        "lesion_margin": linfo.get("margin"),
        "drill_track": linfo.get("drill_track"),
        "acetabulum": ainfo,
        "seconds": seconds,
    }


def _head_crop(data: np.ndarray, affine: np.ndarray, bias: np.ndarray, a_c: np.ndarray, centre, r_marrow: float, s,
               with_native: bool = False):
    """Step 4: the working-grid crop around a head, bias-normalised and scaled to the head's own
    marrow signal. Returns ``(crop, native_affine, norm_w, marrow_level)``, and with ``with_native``
    the crop on the scan's own grid scaled alike (unsmoothed)."""
    crop = grid.make_crop(data.shape, affine, centre, r_marrow + s.cortex_offset_mm + s.crop_margin_mm,
                          s.working_voxel_mm)
    native = data[crop.slices]
    native_aff = shifted_affine(affine, crop.lo)
    b_idx = mm_to_index(a_c, grid.voxel_points(native.shape, native_aff).reshape(-1, 3))
    b_native = ndimage.map_coordinates(bias, b_idx.T, order=1, mode="nearest").reshape(native.shape)
    norm_native = native / b_native
    norm_w = crop.upsample(norm_native)
    norm_w = ndimage.gaussian_filter(norm_w, s.crop_smoothing_mm / crop.spacing)
    marrow_level = _marrow_level(norm_w, crop, centre, r_marrow, s)
    norm_w /= marrow_level
    if with_native:
        return crop, native_aff, norm_w, marrow_level, norm_native / marrow_level
    return crop, native_aff, norm_w, marrow_level


def _femur_in_crop(norm_w: np.ndarray, crop, centre, r_marrow: float, radius: float, settings):
    """Steps 5-6: the proximal femur on the working grid, and the marrow-like (bright) voxels.

    Which marrow is the femur's is decided at the strict level (a cortex blurred by thick slices
    stays below it, so fat beside the neck does not join); its boundary is then the marrow-like
    level within gap_mm of it.
    """
    s = settings.segmentation
    strict, _ = _femur.healthy_marrow(norm_w, crop.affine, centre, r_marrow, s.healthy_level, s.gap_mm)
    bright = norm_w > s.bright_level
    marrow = grid.dilate_mm(strict, crop.spacing, s.gap_mm) & bright
    return _femur.femur_mask(marrow, crop, centre, radius, settings), bright


def neck_axis_from_image(scan: Scan, centre, radius: float, settings: Settings) -> np.ndarray:
    """Unit direction, from the head centre, of the femoral neck seen in a T1 image.

    The femur is found from the marrow signal around a head already known (e.g. from imported
    labels) by the automatic segmentation's own steps 4-6, so that a hip's side can be read from
    its anatomy (the neck runs laterally). Raises InputError where no femur marrow is found (a
    contrast without bright marrow, a head cut by the field of view).
    """
    s = settings.segmentation
    data = np.asarray(scan.data, dtype=np.float32)
    coarse, a_c = grid.coarse_grid(data, scan.affine, s.coarse_voxel_mm)
    bias = grid.bias_field(coarse, a_c, s.bias_sigma_mm)
    r_marrow = max(float(radius) - s.cortex_offset_mm, 1.0)
    centre = np.asarray(centre, dtype=np.float64)
    crop, _, norm_w, _ = _head_crop(data, scan.affine, bias, a_c, centre, r_marrow, s)
    femur_w, _ = _femur_in_crop(norm_w, crop, centre, r_marrow, float(radius), settings)
    return neck_direction(femur_w, crop.affine, centre, float(radius))


def _marrow_level(norm_w: np.ndarray, crop: grid.Crop, centre, r_m: float, s) -> float:
    """Yellow-marrow signal of this head: a high percentile (``marrow_percentile``) in the lower inner
    ball (radius ``marrow_inner_fraction`` x r_m: never lesion)."""
    inner = s.marrow_inner_fraction * r_m
    c_idx = np.floor(mm_to_index(crop.affine, np.asarray(centre, float))).astype(int)
    half = np.ceil(inner / crop.spacing).astype(int) + 1
    lo = np.clip(c_idx - half, 0, norm_w.shape)
    hi = np.clip(c_idx + half + 1, 0, norm_w.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    rel = crop.points(box) - np.asarray(centre, np.float32)
    dist = np.sqrt((rel**2).sum(-1))
    sub = norm_w[box]
    sel = (dist < inner) & (rel[..., 2] < 0)
    if sel.sum() < 20:
        sel = dist < inner
    if sel.sum() < 20:
        raise InputError("no femoral head found: the candidate lies outside the image")
    return float(max(np.percentile(sub[sel], s.marrow_percentile), 1e-3))


def _touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any())


def _thick_non_coronal_axis(scan, ratio: float, max_angle_deg: float) -> str | None:
    """'axial', 'sagittal' or 'oblique' when the slices are thick (coarsest spacing over ``ratio``
    times the finest) and their normal is more than ``max_angle_deg`` from anterior-posterior."""
    spacing = scan.spacing
    k = int(np.argmax(spacing))
    if spacing[k] < ratio * float(spacing.min()):
        return None
    normal = scan.affine[:3, k] / np.linalg.norm(scan.affine[:3, k])
    if abs(normal[1]) >= np.cos(np.radians(max_angle_deg)):
        return None
    nearest = int(np.argmax(np.abs(normal)))
    return {0: "sagittal", 2: "axial"}.get(nearest, "oblique")
