"""Where the lesion sits in the head (docs/method.md section 4).

Weight-bearing span from landmarks, an acetabulum mask or the default; JIC zones and types,
ARCO 2021 location type, antero-posterior regions, per-zone lesion volumes, necrotic arcs on
the mid-coronal and mid-sagittal planes, combined necrotic angle, modified Kerboul grade,
Koo-Kim index and the lesion centroid's latitude and longitude.

All functions take masks on one grid, the 4x4 affine (voxel index -> RAS mm) and a
:class:`pipeline.geometry.frame.HeadFrame`, and work in the head frame's world millimetres.

Choices where docs/method.md leaves room (each one stated in the function that makes it):

* Zone volumes classify voxel centres; a lesion voxel outside the head mask is ignored (with a
  warning), so the zones add up to the lesion-in-head volume.
* Arc "contact": on the sampled mid-plane, a lesion pixel is in contact with the head surface
  when it lies inside the head and within ``contact_shell_mm`` (default 1 mm) of the head's outline (Euclidean
  distance to the nearest non-head pixel). The arc is the smallest circular interval, seen from
  c, that holds every contact pixel (so it wraps across ±180° correctly). A lesion on the plane
  that does not reach the surface has arc 0. :func:`surface_contact` decides the contact pixels
  for the arcs and for qc.png alike, so the picture shows what was measured.
* Mid-plane images for location are sampled by trilinear interpolation of the 0/1 masks
  thresholded at 0.5 (boundary half-way between inside and outside voxel centres), not by
  nearest neighbour, whose voxel-face staircase biases extreme points outward by up to half a
  voxel (about +1.5° per arc at 1 mm). ``sample_order=0`` gives nearest neighbour.
* JIC type and ARCO type read u_max, the largest u of a lesion pixel on that sampled
  mid-coronal image; jic_type_3d reads the largest u of the lesion voxel centres with w > 0.
* The lateral centre-edge angle is measured in the mid-coronal plane between e_sup and c -> edge,
  positive when the edge is lateral.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from pipeline.config import LocationSettings
from pipeline.errors import InputError
from pipeline.geometry.affine import voxel_spacing, voxel_volume_mm3
from pipeline.geometry.frame import HeadFrame, PlaneSample, sample_mask, sample_planes

JIC_ZONES = ("A", "B", "C1", "C2")
AP_REGIONS = ("anterior", "central", "posterior")

#: Labels of :func:`zone_map`: 0 outside the head, 1..12 = JIC zone x antero-posterior region.
ZONE_LABELS = {
    1 + 3 * j + k: f"{zone}/{region}"
    for j, zone in enumerate(JIC_ZONES)
    for k, region in enumerate(AP_REGIONS)
}

#: Default weight-bearing half-span: u_lat = r sin 30°, u_med = -r sin 30° (docs/method.md section 4).
DEFAULT_SPAN_DEG = 30.0

LOCATION_KEYS = (
    "jic_type",
    "jic_type_3d",
    "arco2021_type",
    "zones_ml",
    "arc_coronal_deg",
    "arc_sagittal_deg",
    "cna_deg",
    "kerboul_grade",
    "koo_kim_index",
    "centroid_latitude_deg",
    "centroid_longitude_deg",
    "warnings",
)


# --------------------------------------------------------------------------------------------
# weight-bearing span
# --------------------------------------------------------------------------------------------
def _coronal_direction(frame: HeadFrame, phi_deg: np.ndarray) -> np.ndarray:
    """Unit vectors in the mid-coronal plane at angle phi from e_sup (positive lateral), (n, 3)."""
    phi = np.radians(np.asarray(phi_deg, dtype=np.float64))
    return np.sin(phi)[:, None] * frame.e_lat + np.cos(phi)[:, None] * frame.e_sup


def _runs(flags: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Index ranges [start, stop] of True runs, bridging gaps of at most ``max_gap`` False."""
    idx = np.flatnonzero(flags)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]]
    return list(zip(starts.tolist(), stops.tolist()))


def _angular_distance_to_zero(first: float, last: float) -> float:
    return 0.0 if first <= 0.0 <= last else min(abs(first), abs(last))


def find_acetabular_roof(
    acetabulum_mask: np.ndarray,
    affine: np.ndarray,
    frame: HeadFrame,
    settings: LocationSettings | None = None,
) -> dict:
    """Lateral acetabular edge and medial end of the sourcil on the mid-coronal plane.

    Rays from c in the mid-coronal plane, at angle phi from e_sup over the upper half
    (-90° < phi < 90°, i.e. w > 0), are searched for bone between r - ``roof_inner_mm`` (5 mm)
    and r + ``roof_reach_mm`` (10 mm) (mask sampled trilinearly, thresholded at 0.5;
    :func:`_roof_rays`). The roof is the run of angles with bone (gaps up to ``roof_gap_deg``,
    2°, bridged) nearest the vertical. The lateral edge is the roof's most lateral bone point
    (largest phi): its angle is the lateral centre-edge angle. The sourcil is the roof that keeps
    its distance from c (:func:`_sourcil_end`): moving medially from the apex (phi = 0), it ends
    where the bone recedes by more than ``roof_fossa_step_mm`` (3 mm) beyond its median distance
    over the lateral roof (apex to edge), i.e. at the acetabular fossa, or where the bone stops;
    if it does neither above the equator, the medial end is not found.

    Parameters
    ----------
    acetabulum_mask : ndarray of bool
        Hip bone or acetabulum.
    affine : ndarray, shape (4, 4)
    frame : HeadFrame
    settings : LocationSettings, optional
        The ``roof_*`` search settings (defaults: configs/default.yaml).

    Returns
    -------
    dict
        edge_ras_mm, edge_u_mm, lce_angle_deg (None if no roof), roof_medial_ras_mm,
        roof_medial_u_mm (None if not found), warnings.
    """
    ls = settings if settings is not None else LocationSettings()
    phis, dirs, dist, covered = _roof_rays(acetabulum_mask, affine, frame, ls)
    out = {
        "edge_ras_mm": None,
        "edge_u_mm": None,
        "lce_angle_deg": None,
        "roof_medial_ras_mm": None,
        "roof_medial_u_mm": None,
        "warnings": [],
    }
    runs = _runs(covered, max_gap=int(round(ls.roof_gap_deg / ls.roof_step_deg)))
    if not runs:
        out["warnings"].append(f"no acetabular bone within r + {ls.roof_reach_mm:g} mm above the head")
        return out
    # the roof is the bone run nearest the vertical through c
    lo, hi = min(runs, key=lambda run: _angular_distance_to_zero(phis[run[0]], phis[run[1]]))
    edge_point = frame.center + dist[hi] * dirs[hi]
    out.update(
        edge_ras_mm=[float(x) for x in edge_point],
        edge_u_mm=float(dist[hi] * np.sin(np.radians(phis[hi]))),
        lce_angle_deg=float(phis[hi]),
    )
    medial = _sourcil_end(dist, phis, lo, hi, ls.roof_fossa_step_mm)
    if medial is None or medial >= hi:
        out["warnings"].append(
            "medial end of the acetabular roof (sourcil) not found on the mid-coronal plane"
        )
        return out
    medial_point = frame.center + dist[medial] * dirs[medial]
    out.update(
        roof_medial_ras_mm=[float(x) for x in medial_point],
        roof_medial_u_mm=float(dist[medial] * np.sin(np.radians(phis[medial]))),
    )
    return out


def _roof_rays(acetabulum_mask: np.ndarray, affine: np.ndarray, frame: HeadFrame, ls: LocationSettings):
    """Bone along rays from c in the mid-coronal plane, over the upper half.

    Parameters
    ----------
    acetabulum_mask : ndarray of bool
    affine : ndarray, shape (4, 4)
    frame : HeadFrame
    ls : LocationSettings
        ``roof_step_deg`` (angular step), ``roof_inner_mm`` and ``roof_reach_mm`` (radial range
        about the head surface), ``roof_radial_step_mm`` and ``roof_steps_per_voxel`` (radial step).

    Returns
    -------
    phis : ndarray, shape (m,)
        Ray angles from e_sup (positive lateral), degrees, -90 < phi < 90.
    dirs : ndarray, shape (m, 3)
        Unit ray directions.
    dist : ndarray, shape (m,)
        Distance from c of the first bone on each ray, mm (NaN: none).
    covered : ndarray of bool, shape (m,)
        Rays that meet bone.
    """
    r = frame.radius
    step_mm = float(min(ls.roof_radial_step_mm, voxel_spacing(affine).min() / ls.roof_steps_per_voxel))
    phis = np.arange(-90.0 + ls.roof_step_deg, 90.0, ls.roof_step_deg)
    radii = np.arange(max(r - ls.roof_inner_mm, 0.0), r + ls.roof_reach_mm + 1e-9, step_mm)
    dirs = _coronal_direction(frame, phis)
    pts = frame.center + radii[None, :, None] * dirs[:, None, :]
    hits, _ = sample_mask(acetabulum_mask, affine, pts, order=1)
    covered = hits.any(axis=1)
    dist = np.where(covered, radii[np.argmax(hits, axis=1)], np.nan)
    return phis, dirs, dist, covered


def _sourcil_end(dist: np.ndarray, phis: np.ndarray, lo: int, hi: int, fossa_step_mm: float) -> int | None:
    """Ray index of the medial end of the sourcil, or None.

    The sourcil is searched medially from the apex (or the edge, if the edge is medial of it);
    its reference distance is the lateral roof's, apex to edge, where the lip may flare away.
    It ends before the bone recedes more than ``fossa_step_mm`` beyond that (the fossa), or where
    the bone stops.

    Parameters
    ----------
    dist : ndarray, shape (m,)
        First bone distance per ray, mm (NaN: none), from :func:`_roof_rays`.
    phis : ndarray, shape (m,)
        Ray angles, degrees.
    lo, hi : int
        The roof's run of rays (``hi``: the lateral edge).
    fossa_step_mm : float

    Returns
    -------
    int or None
        None when the roof neither recedes nor stops above the equator (no sourcil end on this
        plane).
    """
    start = int(np.clip(np.searchsorted(phis, 0.0), lo, hi))
    reference = float(np.nanmedian(dist[start : hi + 1]))
    medial, receded = None, False
    for k in range(start, lo - 1, -1):
        if not np.isfinite(dist[k]):
            continue
        if dist[k] > reference + fossa_step_mm:
            receded = True
            break
        medial = k
    # a roof that neither recedes nor stops above the equator shows no sourcil end on this plane
    if not receded and lo == 0:
        medial = None
    return medial


def weight_bearing_span(
    frame: HeadFrame,
    edge_ras=None,
    roof_medial_ras=None,
    acetabulum_mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    default_edge_angle_deg: float = DEFAULT_SPAN_DEG,
    settings: LocationSettings | None = None,
) -> dict:
    """Weight-bearing span [u_med, u_lat] on the mid-coronal plane.

    Each end comes from, in order: a landmark (RAS mm, projected into the head frame); the
    acetabulum mask (:func:`find_acetabular_roof`); the default ±r·sin 30°.

    Parameters
    ----------
    frame : HeadFrame
    edge_ras : sequence of 3 floats, optional
        Lateral acetabular edge, RAS mm.
    roof_medial_ras : sequence of 3 floats, optional
        Medial end of the acetabular roof (sourcil), RAS mm.
    acetabulum_mask : ndarray of bool, optional
        Hip bone / acetabulum on the grid of ``affine``.
    affine : ndarray, shape (4, 4), optional
        Required with ``acetabulum_mask``.
    default_edge_angle_deg : float
        Default ends u = ±r·sin(angle) (settings: location.default_edge_angle_deg).
    settings : LocationSettings, optional
        The acetabular roof search (:func:`find_acetabular_roof`).

    Returns
    -------
    dict
        u_med_mm, u_lat_mm : float, mm.
        source : "landmark" | "acetabulum-mask" | "default", the source of the lateral edge (which
        decides C1/C2 and ARCO 3).
        lce_angle_deg : float or None, lateral centre-edge angle (Wiberg) of the edge used;
        None with the default span (nothing was measured).
        details : dict with source_lat, source_med, edge_ras_mm, roof_medial_ras_mm,
        default_edge_angle_deg, warnings.

    Raises
    ------
    InputError
        If the span is empty (u_lat <= u_med) and a landmark set either end (the user's
        landmarks are never silently replaced). Without landmarks an empty span falls back to
        the default with a warning.
    """
    r = frame.radius
    details = {
        "source_lat": "default",
        "source_med": "default",
        "edge_ras_mm": None,
        "roof_medial_ras_mm": None,
        "default_edge_angle_deg": float(default_edge_angle_deg),
        "warnings": [],
    }
    default = r * np.sin(np.radians(default_edge_angle_deg))
    u_lat, u_med, lce = default, -default, None

    roof = None
    if acetabulum_mask is not None and (edge_ras is None or roof_medial_ras is None):
        if affine is None:
            raise ValueError("an acetabulum mask needs its affine")
        roof = find_acetabular_roof(acetabulum_mask, affine, frame, settings)
        details["warnings"].extend(roof["warnings"])

    if edge_ras is not None:
        u, _, w = frame.uvw(_landmark(edge_ras, "acetabular edge"))
        u_lat, lce = float(u), float(np.degrees(np.arctan2(u, w)))
        details.update(source_lat="landmark", edge_ras_mm=[float(x) for x in edge_ras])
    elif roof is not None and roof["edge_u_mm"] is not None:
        u_lat, lce = roof["edge_u_mm"], roof["lce_angle_deg"]
        details.update(source_lat="acetabulum-mask", edge_ras_mm=roof["edge_ras_mm"])

    if roof_medial_ras is not None:
        u_med = float(frame.uvw(_landmark(roof_medial_ras, "acetabular roof medial end"))[0])
        details.update(source_med="landmark", roof_medial_ras_mm=[float(x) for x in roof_medial_ras])
    elif roof is not None and roof["roof_medial_u_mm"] is not None:
        u_med = roof["roof_medial_u_mm"]
        details.update(source_med="acetabulum-mask", roof_medial_ras_mm=roof["roof_medial_ras_mm"])

    if u_lat <= u_med:
        if "landmark" in (details["source_lat"], details["source_med"]):
            raise InputError(
                f"acetabular edge (u = {u_lat:.1f} mm) is not lateral of the roof's medial end "
                f"(u = {u_med:.1f} mm)"
            )
        details["warnings"].append("weight-bearing span empty; falling back to the default span")
        u_lat, u_med, lce = default, -default, None
        details.update(source_lat="default", source_med="default")
    return {
        "u_med_mm": float(u_med),
        "u_lat_mm": float(u_lat),
        "source": details["source_lat"],
        "lce_angle_deg": lce,
        "details": details,
    }


def _landmark(point, what: str) -> np.ndarray:
    arr = np.asarray(point, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{what} must be 3 finite RAS coordinates in mm, got {point!r}")
    return arr


# --------------------------------------------------------------------------------------------
# zones and types
# --------------------------------------------------------------------------------------------
def thirds(span: dict) -> tuple[float, float]:
    """t1, t2: the weight-bearing span cut in thirds, mm."""
    u_med, u_lat = span["u_med_mm"], span["u_lat_mm"]
    return u_med + (u_lat - u_med) / 3.0, u_med + 2.0 * (u_lat - u_med) / 3.0


def jic_type_of(u_max: float, span: dict) -> str:
    """JIC type from the lateral-most lesion point u_max (mm): A, B, C1 or C2."""
    t1, t2 = thirds(span)
    if u_max <= t1:
        return "A"
    if u_max <= t2:
        return "B"
    return "C1" if u_max < span["u_lat_mm"] else "C2"


def arco2021_type_of(u_max: float, span: dict) -> int:
    """ARCO 2021 location type: 1 medial to the apex, 2 within the span, 3 at or lateral of the edge."""
    if u_max <= 0:
        return 1
    return 2 if u_max < span["u_lat_mm"] else 3


def kerboul_grade_of(cna_deg: float) -> int:
    """Modified Kerboul grade (Ha et al. 2006) from the combined necrotic angle, degrees."""
    for grade, limit in ((1, 200.0), (2, 250.0), (3, 300.0)):
        if cna_deg < limit:
            return grade
    return 4


def zone_indices(uvw: np.ndarray, frame: HeadFrame, span: dict) -> tuple[np.ndarray, np.ndarray]:
    """JIC zone index (0..3 = A, B, C1, C2) and AP index (0..2 = anterior, central, posterior).

    JIC zones are parasagittal slabs by u: A u <= t1 < B <= t2 < C1 <= u_lat < C2.
    Regions: anterior v > r/3, central |v| <= r/3, posterior v < -r/3.
    """
    uvw = np.asarray(uvw, dtype=np.float64).reshape(-1, 3)
    t1, t2 = thirds(span)
    jic = np.searchsorted(np.array([t1, t2, span["u_lat_mm"]]), uvw[:, 0], side="left")
    third = frame.radius / 3.0
    ap = np.where(uvw[:, 1] > third, 0, np.where(uvw[:, 1] < -third, 2, 1))
    return jic, ap


def zone_volumes_ml(mask: np.ndarray, affine: np.ndarray, frame: HeadFrame, span: dict) -> dict:
    """Volume of a mask per JIC zone, AP region and their 12 combinations, mL (voxel centres)."""
    jic, ap = zone_indices(frame.uvw_of_voxels(mask, affine), frame, span)
    counts = np.bincount(3 * jic + ap, minlength=12).reshape(4, 3)
    ml = voxel_volume_mm3(affine) / 1000.0
    out = {zone: float(counts[j].sum() * ml) for j, zone in enumerate(JIC_ZONES)}
    out.update({region: float(counts[:, k].sum() * ml) for k, region in enumerate(AP_REGIONS)})
    out.update({ZONE_LABELS[1 + 3 * j + k]: float(counts[j, k] * ml) for j in range(4) for k in range(3)})
    return out


def zone_map(head_mask: np.ndarray, affine: np.ndarray, frame: HeadFrame, span: dict) -> np.ndarray:
    """Zone label of every head voxel (see :data:`ZONE_LABELS`; 0 outside the head), uint8."""
    head = np.asarray(head_mask, dtype=bool)
    jic, ap = zone_indices(frame.uvw_of_voxels(head, affine), frame, span)
    out = np.zeros(head.shape, dtype=np.uint8)
    out[head] = (1 + 3 * jic + ap).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# angles
# --------------------------------------------------------------------------------------------
def circular_span_deg(angles_deg: np.ndarray) -> float:
    """Width of the smallest circular interval holding all angles, degrees (0..360)."""
    a = np.sort(np.mod(np.asarray(angles_deg, dtype=np.float64), 360.0))
    if len(a) == 0:
        return 0.0
    gaps = np.diff(np.r_[a, a[0] + 360.0])
    return float(360.0 - gaps.max())


class SurfaceContact(NamedTuple):
    """The lesion's contact with the head surface on one mid-plane, as the arc measures it.

    Attributes
    ----------
    lesion, head : PlaneSample
        The lesion (restricted to the head) and the head on the same pixel grid.
    contact : ndarray of bool, shape of ``lesion.image``
        Lesion pixels inside the head within the contact shell of the head's outline.
    """

    lesion: PlaneSample
    head: PlaneSample
    contact: np.ndarray

    def points_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane coordinates (a, w) of the contact pixels, mm."""
        ia, iw = np.nonzero(self.contact)
        return self.lesion.a_mm[ia], self.lesion.w_mm[iw]


def contact_pixels(lesion_plane: PlaneSample, head_plane: PlaneSample, contact_shell_mm: float) -> np.ndarray:
    """Lesion pixels inside the head within ``contact_shell_mm`` of its outline (distance to the
    nearest non-head pixel; the grid's border counts as outside)."""
    step = float(lesion_plane.a_mm[1] - lesion_plane.a_mm[0])
    head = head_plane.image
    depth = ndimage.distance_transform_edt(np.pad(head, 1), sampling=step)[1:-1, 1:-1]
    return lesion_plane.image & head & (depth <= contact_shell_mm)


def surface_contact(
    head_mask: np.ndarray,
    lesion_mask: np.ndarray,
    affine: np.ndarray,
    frame: HeadFrame,
    plane: str,
    step_mm: float = 0.25,
    contact_shell_mm: float = 1.0,
    sample_order: int = 1,
) -> SurfaceContact:
    """Sample head and lesion on a mid-plane and find the lesion's contact with the head surface.

    The one place where the arcs' contact is decided: :func:`location_metrics` measures the arcs
    from it and qc.png draws it, so the picture shows the pixels that were measured. Parameters
    as in :func:`location_metrics` (settings: location.plane_step_mm, location.contact_shell_mm).
    The lesion is restricted to the head; the grid reaches two voxels and 2 mm beyond the sphere,
    so the whole head outline is on it.
    """
    head = np.asarray(head_mask, dtype=bool)
    lesion = np.asarray(lesion_mask, dtype=bool) & head
    half = frame.radius + 2.0 * float(voxel_spacing(affine).max()) + 2.0
    les, hd = sample_planes([lesion, head], affine, frame, plane, step_mm, half, order=sample_order)
    return SurfaceContact(les, hd, contact_pixels(les, hd, float(contact_shell_mm)))


def arc_of_contact(contact: SurfaceContact) -> float:
    """Necrotic arc, degrees, of a :class:`SurfaceContact` (see :func:`necrotic_arc_deg`)."""
    if not contact.contact.any():
        return 0.0
    a, w = contact.points_mm()
    return circular_span_deg(np.degrees(np.arctan2(w, a)))


def necrotic_arc_deg(lesion_plane, head_plane, contact_shell_mm: float) -> float:
    """Angle at c spanned by the lesion's contact with the head surface on one mid-plane.

    Contact pixels: lesion and head, within ``contact_shell_mm`` of the head outline (distance
    to the nearest non-head pixel). The arc is the circular span of their angles about c: the
    smallest circular interval holding them all, so an arc across ±180° is measured correctly
    and a lesion touching the surface in two places spans the gap between them.

    Parameters
    ----------
    lesion_plane, head_plane : PlaneSample
        The same plane and pixel grid.
    contact_shell_mm : float

    Returns
    -------
    float, degrees (0 when the lesion does not reach the surface).
    """
    return arc_of_contact(SurfaceContact(lesion_plane, head_plane,
                                         contact_pixels(lesion_plane, head_plane, contact_shell_mm)))


# --------------------------------------------------------------------------------------------
# all location metrics
# --------------------------------------------------------------------------------------------
def empty_location_metrics(warnings: list | None = None) -> dict:
    """Location metrics of an empty lesion: every type and angle null, every zone 0.0 mL."""
    zones = {zone: 0.0 for zone in JIC_ZONES}
    zones.update({region: 0.0 for region in AP_REGIONS})
    zones.update({label: 0.0 for label in ZONE_LABELS.values()})
    out = {key: None for key in LOCATION_KEYS}
    out.update(zones_ml=zones, warnings=list(warnings or []))
    return out


def location_metrics(
    head_mask: np.ndarray,
    lesion_mask: np.ndarray,
    affine: np.ndarray,
    frame: HeadFrame,
    span: dict,
    step_mm: float = 0.25,
    contact_shell_mm: float = 1.0,
    sample_order: int = 1,
    contacts: dict | None = None,
) -> dict:
    """Location of the lesion in the head (docs/method.md section 4).

    Parameters
    ----------
    head_mask, lesion_mask : ndarray of bool, same grid
        The lesion is restricted to the head.
    affine : ndarray, shape (4, 4)
    frame : HeadFrame
    span : dict
        From :func:`weight_bearing_span` (u_med_mm, u_lat_mm).
    step_mm : float
        Pixel size of the mid-plane sampling, mm.
    contact_shell_mm : float
        Depth under the head outline that counts as contact with the surface for the arcs, mm.
        The mid-planes are sampled trilinearly at ``step_mm``, so the outline is sub-voxel smooth
        and 1 mm suffices even for 3.5 mm slices; a deeper shell widens the arc where the lesion
        boundary meets the surface obliquely (on the sample cohort: +1-3 degrees at 2 mm, +2-12 at
        3.5 mm, against the continuous truth).
    sample_order : {0, 1}
        Mid-plane sampling: 1 trilinear thresholded at 0.5 (default), 0 nearest neighbour.
    contacts : dict, optional
        Receives the :class:`SurfaceContact` of each mid-plane the arcs were measured on, by plane
        name (none for an empty lesion), so that qc.png draws them without sampling again.

    Returns
    -------
    dict
        jic_type ("A" | "B" | "C1" | "C2"), jic_type_3d, arco2021_type (1 | 2 | 3), zones_ml,
        arc_coronal_deg, arc_sagittal_deg, cna_deg, kerboul_grade (1..4), koo_kim_index,
        centroid_latitude_deg, centroid_longitude_deg, warnings (list of str). Values that
        cannot be measured are None; zones are 0.0 mL for an empty lesion.
    """
    head = np.asarray(head_mask, dtype=bool)
    lesion_all = np.asarray(lesion_mask, dtype=bool)
    if head.shape != lesion_all.shape:
        raise InputError(f"head and lesion masks differ in shape: {head.shape} vs {lesion_all.shape}")
    out = empty_location_metrics()
    warnings = out["warnings"]
    outside = int((lesion_all & ~head).sum())
    if outside:
        warnings.append(f"{outside} lesion voxels lie outside the head and are ignored for location")
    lesion = lesion_all & head
    if not lesion.any():
        warnings.append("empty lesion: location types, angles and centroid are null")
        return out

    out["zones_ml"] = zone_volumes_ml(lesion, affine, frame, span)
    uvw = frame.uvw_of_voxels(lesion, affine)

    upper = uvw[:, 2] > 0
    if upper.any():
        out["jic_type_3d"] = jic_type_of(float(uvw[upper, 0].max()), span)
    else:
        warnings.append("no lesion in the upper hemisphere (w > 0): jic_type_3d is null")

    arcs = _mid_plane_figures(head, lesion, affine, frame, span, step_mm, contact_shell_mm, sample_order, out,
                              contacts)
    _combined_angles(arcs, out)
    _centroid_angles(uvw, out)
    return out


def _mid_plane_figures(head: np.ndarray, lesion: np.ndarray, affine: np.ndarray, frame: HeadFrame, span: dict,
                       step_mm: float, contact_shell_mm: float, sample_order: int, out: dict,
                       contacts: dict | None = None) -> dict:
    """Necrotic arcs on the mid-coronal and mid-sagittal planes; JIC and ARCO types from the coronal one.

    Parameters
    ----------
    head, lesion : ndarray of bool
        The lesion inside the head.
    affine : ndarray, shape (4, 4)
    frame : HeadFrame
    span : dict
        Weight-bearing span (u_med_mm, u_lat_mm).
    step_mm, contact_shell_mm, sample_order
        As in :func:`location_metrics`.
    out : dict
        The location figures: jic_type and arco2021_type are set, warnings appended to.
    contacts : dict, optional
        Receives each plane's :class:`SurfaceContact`.

    Returns
    -------
    dict
        ``coronal`` and ``sagittal`` arcs, degrees (0 where the lesion is absent from the plane).
    """
    warnings = out["warnings"]
    arcs = {}
    for plane in ("coronal", "sagittal"):
        sc = surface_contact(head, lesion, affine, frame, plane, step_mm, contact_shell_mm, sample_order)
        if contacts is not None:
            contacts[plane] = sc
        les = sc.lesion
        if not les.image.any():
            # a lesion that does not cross the plane touches no surface there: its arc is 0, so CNA,
            # the Kerboul grade and the Koo-Kim index stay defined (null only for an empty lesion)
            what = "arc 0, JIC and ARCO types null" if plane == "coronal" else "arc 0"
            warnings.append(f"lesion absent from the mid-{plane} plane: {what}")
            arcs[plane] = 0.0
            continue
        arcs[plane] = arc_of_contact(sc)
        if arcs[plane] == 0.0:
            warnings.append(f"lesion does not reach the head surface on the mid-{plane} plane: arc 0")
        if plane == "coronal":
            u_max = float(les.a_mm[np.nonzero(les.image)[0]].max())
            out["jic_type"] = jic_type_of(u_max, span)
            out["arco2021_type"] = arco2021_type_of(u_max, span)
    return arcs


def _combined_angles(arcs: dict, out: dict) -> None:
    """Arcs, combined necrotic angle, Kerboul grade and Koo-Kim index into ``out``.

    Parameters
    ----------
    arcs : dict
        ``coronal`` and ``sagittal`` arcs, degrees (:func:`_mid_plane_figures`).
    out : dict
        The location figures.
    """
    out["arc_coronal_deg"], out["arc_sagittal_deg"] = arcs["coronal"], arcs["sagittal"]
    cna = arcs["coronal"] + arcs["sagittal"]
    out["cna_deg"] = float(cna)
    out["kerboul_grade"] = kerboul_grade_of(cna)
    out["koo_kim_index"] = float(arcs["coronal"] / 180.0 * arcs["sagittal"] / 180.0 * 100.0)


def _centroid_angles(uvw: np.ndarray, out: dict) -> None:
    """Latitude and longitude of the lesion centroid in the head frame into ``out``.

    Parameters
    ----------
    uvw : ndarray, shape (n, 3)
        Lesion voxel centres in the head frame, mm.
    out : dict
        The location figures; null angles (with a warning) for a centroid at the head centre.
    """
    centroid = uvw.mean(axis=0)
    dist = float(np.linalg.norm(centroid))
    if dist > 1e-9:
        out["centroid_latitude_deg"] = float(np.degrees(np.arcsin(np.clip(centroid[2] / dist, -1, 1))))
        out["centroid_longitude_deg"] = float(np.degrees(np.arctan2(centroid[1], centroid[0])))
    else:
        out["warnings"].append("lesion centroid at the head centre: latitude and longitude are null")
