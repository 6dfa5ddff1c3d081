"""Continuous anatomy model of the hips and its T1-weighted MR rendering, with ground truth.

The model is a set of signed-distance functions (SDFs, millimetres, negative inside) in RAS
millimetres: femur (spherical head, tapered neck, shaft, trochanters), acetabulum and a hint of
the hip bone (ilium, ischium, pubis), joint cartilage, capsule and labrum, body outline with
subcutaneous fat, muscle and intermuscular fat, pelvic fat and bladder, and an osteonecrotic
lesion enclosed by a serpiginous low-signal band. Truth (volumes, landmarks, location) is
computed from the continuous model, not from the rendered voxels.

Coordinates
-----------
* Body coordinates: RAS mm at the baseline visit. A visit's pose (rotation R, translation t)
  maps body to that visit's world (scanner) coordinates: ``q = R p + t``.
* Hip-local coordinates: the head frame of docs/method.md section 1 in body coordinates,
  ``u = (p - c).e_lat, v = (p - c).e_ant, w = (p - c).e_sup`` with e_lat = +x for a right hip and
  -x for a left hip. The hip is modelled once in (u, v, w), so left and right are exact mirrors.

Rendering
---------
Each voxel's value is the mean of the model over the voxel box (partial volume): every voxel is
sampled at its centre, and voxels within a half-diagonal of a tissue boundary are split into
about cubic sub-boxes (5 along a 3.5 mm slice) and averaged. Per-tissue texture, a small in-plane
point-spread blur, a smooth multiplicative bias field and Rician noise follow. Truth label maps
use the fraction of each voxel inside the set, from a finer sub-grid, thresholded at 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations as ornt

__all__ = [
    "T1Contrast",
    "LesionParams",
    "HipParams",
    "BodyParams",
    "SubjectParams",
    "HipState",
    "Visit",
    "Acquisition",
    "Subject",
    "Hip",
    "RenderedScan",
    "build_subject",
    "render_scan",
    "hip_truth",
    "rotation_matrix",
    "random_subject_params",
]

F32 = np.float32
MITCHELL_CLASSES = ("A", "B", "C", "D")


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class T1Contrast:
    """T1-weighted signal of each tissue, scanner-like units (yellow marrow ~930).

    Mitchell cores: A fat-like (as marrow), B blood-like (bright-ish), C fluid-like (dark),
    D fibrous (dark).
    """

    fat: float = 1000.0
    skin: float = 560.0
    muscle: float = 370.0
    yellow_marrow: float = 930.0
    red_marrow: float = 560.0
    pelvic_marrow: float = 720.0
    cortex: float = 40.0
    tendon: float = 60.0
    labrum: float = 80.0
    capsule: float = 110.0
    cartilage: float = 480.0
    joint_fluid: float = 210.0
    pulvinar_fat: float = 850.0
    urine: float = 170.0
    band: float = 120.0
    track: float = 210.0
    physeal_scar: float = 650.0
    regenerated: float = 820.0
    core_a: float = 920.0
    core_b: float = 760.0
    core_c: float = 300.0
    core_d: float = 215.0
    bowel: float = 430.0

    def core(self, mitchell: str) -> float:
        return {"A": self.core_a, "B": self.core_b, "C": self.core_c, "D": self.core_d}[mitchell]


@dataclass(frozen=True)
class LesionParams:
    """Osteonecrotic segment under the weight-bearing head surface, at baseline.

    Attributes
    ----------
    mitchell : {'A', 'B', 'C', 'D'}
        Signal class of the core.
    nf_pct : float
        Target necrotic fraction (% of head volume) at baseline; the lesion size is calibrated
        to it (the truth records the value reached, within ~0.5 %).
    direction : (3,) float
        Head-frame (u, v, w) direction from the head centre to the lesion's surface centre;
        superior and antero-lateral for a typical lesion.
    shape : (3,) float
        Relative semi-axes of the ellipsoid that carves the lesion: depth (along direction),
        coronal tangent, antero-posterior tangent.
    centre_shift : float
        Ellipsoid centre beyond the head surface, in units of the depth semi-axis (0 = on the
        surface); larger values give a flatter, shallower segment.
    band_mm : (2,) float
        Minimum and maximum thickness of the low-signal band, mm.
    wave_mm : float
        Peak amplitude of the serpiginous waviness of the band, mm.
    wavelength_mm : (2,) float
        Range of wavelengths of the waviness, mm.
    seed : int
        Seed of the waviness and band-thickness fields.
    """

    mitchell: str = "C"
    nf_pct: float = 20.0
    direction: tuple = (0.45, 0.30, 0.84)
    shape: tuple = (0.8, 1.0, 0.85)
    centre_shift: float = 0.15
    band_mm: tuple = (2.0, 4.0)
    wave_mm: float = 1.3
    wavelength_mm: tuple = (9.0, 16.0)
    seed: int = 0


@dataclass(frozen=True)
class HipParams:
    """Anatomy of one hip (proximal femur, acetabulum, joint), body RAS mm and degrees.

    Attributes
    ----------
    side : {'right', 'left'}
    center : (3,) float
        Femoral-head centre, body RAS mm.
    radius : float
        Femoral-head radius, mm.
    waist_ratio : float
        Neck waist radius / head radius.
    neck_shaft_deg, anteversion_deg, shaft_tilt_deg : float
        Neck-shaft angle, femoral anteversion, coronal tilt of the shaft (distal end medial).
    offset_mm : float
        Distance from the head centre to the shaft axis (femoral offset), mm.
    shaft_radius : float
        Diaphyseal radius, mm.
    ce_deg : float
        Centre-edge angle (Wiberg) of the acetabular lateral edge on the mid-coronal plane.
    acetabular_version_deg : float
        Posterior tilt of the cup's deep axis (the opening faces anteriorly).
    cup_coverage_deg : float
        Half-angle of the acetabular cup about its deep axis.
    roof_medial_deg : float
        Angle from vertical (medially) of the medial end of the weight-bearing roof (sourcil)
        on the mid-coronal plane; the acetabular fossa starts there.
    cartilage_mm, joint_gap_mm : float
        Thickness of each cartilage layer and of the fluid film between them.
    fovea : bool
        Carve a foveal pit (ligamentum teres insertion) in the medial head.
    red_marrow : float
        Amount (0-1) of patchy red (haematopoietic) marrow in the neck and metaphysis.
    red_marrow_head : float
        Amount (0-1) of patchy red marrow in the femoral head (a lesion mimic).
    effusion_mm : float
        Joint effusion: fluid thickness inside the capsule around the neck, mm.
    seed : int
        Seed of this hip's texture fields.
    lesion : LesionParams or None
        None for a healthy head.
    """

    side: str = "right"
    center: tuple = (0.0, 0.0, 0.0)
    radius: float = 23.5
    waist_ratio: float = 0.68
    neck_shaft_deg: float = 130.0
    anteversion_deg: float = 12.0
    shaft_tilt_deg: float = 6.0
    offset_mm: float = 42.0
    shaft_radius: float = 14.0
    ce_deg: float = 32.0
    acetabular_version_deg: float = 15.0
    cup_coverage_deg: float = 82.0
    roof_medial_deg: float = 30.0
    cartilage_mm: float = 1.8
    joint_gap_mm: float = 0.4
    fovea: bool = False
    red_marrow: float = 0.35
    red_marrow_head: float = 0.0
    effusion_mm: float = 0.5
    seed: int = 0
    lesion: LesionParams | None = None


@dataclass(frozen=True)
class BodyParams:
    """Body outline and soft tissue, body RAS mm.

    Attributes
    ----------
    midline_x : float
        x of the body's sagittal midline (pubic symphysis), mm.
    pelvis_y, pelvis_z : float
        y of the pelvis centre and z of the hip-joint level, mm.
    half_width_mm, half_depth_mm : float
        Semi-axes of the trunk's elliptic cross-section at hip level, mm.
    fat_mm : float
        Mean subcutaneous fat thickness, mm.
    seed : int
        Seed of the soft-tissue fields (intermuscular fat, textures).
    """

    midline_x: float = 0.0
    pelvis_y: float = 0.0
    pelvis_z: float = 0.0
    half_width_mm: float = 170.0
    half_depth_mm: float = 118.0
    fat_mm: float = 17.0
    seed: int = 0


@dataclass(frozen=True)
class SubjectParams:
    """One subject: body, both hips, tissue contrast."""

    name: str
    body: BodyParams
    right: HipParams
    left: HipParams
    contrast: T1Contrast = field(default_factory=T1Contrast)


@dataclass(frozen=True)
class HipState:
    """State of one hip at a visit, relative to its baseline lesion.

    Attributes
    ----------
    regeneration_pct : float
        Target regeneration relative to baseline, % of the baseline lesion volume (negative:
        growth). The change is calibrated to it; the truth records the value reached.
    preference : (5,) float
        Weights (base, lateral, posterior, medial, anterior) of where the margin moves:
        regeneration proceeds fastest where the weight is largest.
    mitchell : str or None
        Core class at this visit (None: as at baseline).
    track : bool
        Show the core-decompression drill track (a follow-up after surgery).
    track_signal : float or None
        Track signal (None: contrast default); later visits show a partly filled track.
    dent_mm : float
        Collapse: depth of a flat dent in the head, mm (0: none). The head (and femur) beyond the
        plane normal to ``dent_direction`` at r - dent_mm from the head centre is removed, a
        spherical cap: the head's depression below its sphere is dent_mm, at c + (r - dent_mm) a,
        and the volume missing from the sphere pi h^2 (3 r - h) / 3 (docs/method.md section 6).
    dent_direction : (3,) float or None
        Hip-local (u, v, w) axis a of the dent; None: the lesion's direction (straight up, w, for
        a healthy head).
    dent_radius_mm : float or None
        Shape of the dent: None, the flat cut above; a radius rd, a spherical crater instead, the
        head less the ball of radius rd centred at c + (r - dent_mm + rd) a (depression dent_mm at
        the same deepest point, a narrower and steeper dent the smaller rd; a lens of volume
        :func:`dent_missing_volume_ml` is missing).
    dent_cartilage_follows : bool
        Where the articular cartilage lies over a dent: False, on the sphere (the dent fills with
        joint fluid under it); True, on the dented bone, as when the subchondral plate and its
        cartilage sink together (the gap above it is joint fluid). Labels are the same.
    """

    regeneration_pct: float = 0.0
    preference: tuple = (0.3, 0.8, 0.5, 0.0, 0.0)
    mitchell: str | None = None
    track: bool = False
    track_signal: float | None = None
    dent_mm: float = 0.0
    dent_direction: tuple | None = None
    dent_radius_mm: float | None = None
    dent_cartilage_follows: bool = False


@dataclass(frozen=True)
class Visit:
    """One imaging visit: patient pose and the state of each hip.

    ``rotation_deg`` (about x, then y, then z, applied as Rz Ry Rx) and ``translation_mm`` map
    body (baseline) coordinates to this visit's scanner coordinates: q = R p + t.
    """

    months: float = 0.0
    rotation_deg: tuple = (0.0, 0.0, 0.0)
    translation_mm: tuple = (0.0, 0.0, 0.0)
    right: HipState = field(default_factory=HipState)
    left: HipState = field(default_factory=HipState)

    @property
    def rotation(self) -> np.ndarray:
        return rotation_matrix(*self.rotation_deg)

    @property
    def translation(self) -> np.ndarray:
        return np.asarray(self.translation_mm, dtype=np.float64)

    def state(self, side: str) -> HipState:
        return self.right if side == "right" else self.left


@dataclass(frozen=True)
class Acquisition:
    """Scan geometry and image quality.

    Attributes
    ----------
    spacing_mm : (3,) float
        Voxel size along (in-plane column, in-plane row, slice) of the acquisition frame, mm.
        The slice thickness equals the slice spacing (contiguous slices, box slice profile).
    fov_mm : (3,) float
        Extent along the same three axes, mm.
    centre_ras : (3,) float
        FOV centre, scanner RAS mm.
    plane : {'coronal', 'axial', 'sagittal'}
        Acquisition plane before obliquity. Coronal: columns along x, rows along z, slices
        along y (anterior-posterior).
    oblique_deg : (3,) float
        Rotation of the acquisition frame (about x, y, z; Rz Ry Rx), degrees; kept exactly in
        the affine.
    storage : str
        Axis codes of the stored array (e.g. 'LIP': first axis toward Left, second toward
        Inferior, third toward Posterior). For oblique scans they name the nearest axes.
    noise_pct : float
        Rician noise sigma, % of the yellow-marrow signal.
    bias_pct : float
        Peak deviation of the smooth multiplicative bias field from 1, %.
    render_ss : (3,) int
        First split of voxels near tissue boundaries (intensity partial volume); choose it so
        the sub-boxes are about cubic.
    render_ss2 : (3,) int
        Second split of the sub-boxes that are still near a boundary ((1, 1, 1): none).
    psf_sigma_vox : (3,) float
        Gaussian point-spread function per axis, voxels: the band-limited in-plane resolution
        of MR (and it hides the in-plane staircase of centre sampling).
    label_ss : (3,) int
        Sub-samples per axis for head and lesion label fractions near the set's surface.
    label_ss_bone : (3,) int
        Sub-samples per axis for the femur and hip-bone masks.
    """

    spacing_mm: tuple = (0.7, 0.7, 3.5)
    fov_mm: tuple = (150.0, 150.0, 100.0)
    centre_ras: tuple = (0.0, 0.0, 0.0)
    plane: str = "coronal"
    oblique_deg: tuple = (0.0, 0.0, 0.0)
    storage: str = "LIP"
    noise_pct: float = 3.0
    bias_pct: float = 15.0
    render_ss: tuple = (1, 1, 5)
    render_ss2: tuple = (1, 1, 1)
    psf_sigma_vox: tuple = (0.45, 0.45, 0.0)
    label_ss: tuple = (3, 3, 9)
    label_ss_bone: tuple = (2, 2, 5)

    @property
    def slice_thickness_mm(self) -> float:
        return float(self.spacing_mm[2])


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def rotation_matrix(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> np.ndarray:
    """Rotation Rz @ Ry @ Rx from angles in degrees about the RAS x, y, z axes."""
    ax, ay, az = (math.radians(a) for a in (rx_deg, ry_deg, rz_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Angle of a rotation matrix, degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _smin(a, b, k):
    """Polynomial smooth minimum (a fillet of width ~k mm where two surfaces meet)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _sstep(x, lo, hi):
    """Smoothstep from 0 at lo to 1 at hi (lo > hi gives the mirrored step)."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ellipsoid_sdf(x, y, z, a, b, c):
    """Distance bound to an axis-aligned ellipsoid (never larger than the true distance)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2 + (z / (c * c)) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


FAR = 99.0  # stand-in distance (mm) for points culled away from a primitive


def _cull(x, y, z, lo, hi):
    """Indices of points inside an axis-aligned box (None if all are)."""
    m = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
    if m.all():
        return None
    return np.nonzero(m)[0]


def _culled(fn, x, y, z, lo, hi, *args, **kw):
    """Evaluate a distance function only inside its padded bounding box, FAR elsewhere.

    Valid wherever the caller only needs distances below the padding (smooth unions with a
    blend width under the padding, boundary proximity for partial-volume refinement).
    """
    idx = _cull(x, y, z, lo, hi)
    if idx is None:
        return fn(x, y, z, *args, **kw)
    out = np.full(x.shape, FAR, dtype=x.dtype)
    if idx.size:
        out[idx] = fn(x[idx], y[idx], z[idx], *args, **kw)
    return out


def _segment_box(a, b, ra, rb, scale=(1.0, 1.0, 1.0), pad=12.0):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = max(ra, rb if rb is not None else ra) / min(scale) + pad
    return np.minimum(a, b) - r, np.maximum(a, b) + r


def _seg(x, y, z, a, b, ra, rb=None, scale=(1.0, 1.0, 1.0)):
    """Culled segment distance (see :func:`_segment_sdf`)."""
    lo, hi = _segment_box(a, b, ra, rb, scale)
    return _culled(_segment_sdf, x, y, z, lo, hi, a, b, ra, rb, scale)


def _ell(x, y, z, c, axes, pad=12.0):
    """Culled ellipsoid distance bound, centre c, semi-axes ``axes``."""
    c = [float(v) for v in c]
    lo = np.array(c) - np.array(axes) - pad
    hi = np.array(c) + np.array(axes) + pad

    def f(xx, yy, zz):
        return _ellipsoid_sdf(xx - c[0], yy - c[1], zz - c[2], *axes)

    return _culled(f, x, y, z, lo, hi)


def _segment_sdf(x, y, z, a, b, ra, rb=None, scale=(1.0, 1.0, 1.0)):
    """Distance to a segment a-b thickened to radius ra (at a) .. rb (at b), mm.

    ``scale`` stretches the coordinates first (values < 1 widen the shape along that axis while
    keeping the result a lower bound of the true distance).
    """
    # Python floats keep float32 inputs in float32 (numpy scalars would promote to float64).
    ra = float(ra)
    rb = ra if rb is None else float(rb)
    sx, sy, sz = (float(v) for v in scale)
    a0, a1, a2 = (float(v) for v in a)
    b0, b1, b2 = (float(v) for v in b)
    ab0, ab1, ab2 = (b0 - a0) * sx, (b1 - a1) * sy, (b2 - a2) * sz
    ll = ab0 * ab0 + ab1 * ab1 + ab2 * ab2
    px, py, pz = (x - a0) * sx, (y - a1) * sy, (z - a2) * sz
    t = np.clip((px * ab0 + py * ab1 + pz * ab2) * (1.0 / ll), 0.0, 1.0)
    dx, dy, dz = px - t * ab0, py - t * ab1, pz - t * ab2
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + (rb - ra) * t)


@dataclass(frozen=True, eq=False)
class WaveField:
    """Smooth random field: a sum of plane waves with unit variance, evaluated anywhere.

    Used for tissue textures, intermuscular fat sheets and the waviness of the lesion band, so
    every visit of a subject shows the same pattern in body coordinates.
    """

    k: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, wavelength_mm: tuple) -> WaveField:
        lam = rng.uniform(wavelength_mm[0], wavelength_mm[1], n)
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        k = dirs * (2.0 * np.pi / lam)[:, None]
        phase = rng.uniform(0.0, 2.0 * np.pi, n)
        amp = np.full(n, math.sqrt(2.0 / n))
        return cls(k.astype(F32), phase.astype(F32), amp.astype(F32))

    @property
    def grad_rms(self) -> float:
        """RMS gradient magnitude, field units per mm."""
        return float(np.sqrt(np.sum(self.amp**2 * np.sum(self.k**2, axis=1)) / 2.0))

    def __call__(self, x, y, z):
        out = np.zeros(np.shape(x), dtype=np.result_type(x, F32))
        for (kx, ky, kz), ph, a in zip(self.k.tolist(), self.phase.tolist(), self.amp.tolist()):
            out += a * np.cos(kx * x + ky * y + kz * z + ph)
        return out


# ----------------------------------------------------------------------------------------------
# one hip
# ----------------------------------------------------------------------------------------------
class Hip:
    """One hip's continuous model in hip-local coordinates (u, v, w), mm.

    Built from :class:`HipParams`; the lesion's size is calibrated to ``lesion.nf_pct`` here.
    """

    FOSSA_HALF_ANGLE_DEG = 42.0
    FOSSA_DEPTH_MM = 3.5

    def __init__(self, params: HipParams, contrast: T1Contrast):
        p = params
        self.params = p
        self.contrast = contrast
        self.side = p.side
        self.sigma = 1.0 if p.side == "right" else -1.0
        self.c = np.asarray(p.center, dtype=np.float64)
        self.r = float(p.radius)
        self.rho = float(p.waist_ratio * p.radius)
        self.h = math.sqrt(self.r**2 - self.rho**2)  # neck-plane cut, docs/method.md section 2

        # femur -----------------------------------------------------------------------------
        beta = math.radians(180.0 - p.neck_shaft_deg - p.shaft_tilt_deg)
        av = math.radians(p.anteversion_deg)
        # n points from the head centre down the neck: lateral, inferior, and posterior because
        # an anteverted neck carries the head anterior to the trochanter.
        self.n = _unit([math.sin(beta) * math.cos(av), -math.sin(beta) * math.sin(av), -math.cos(beta)])
        tau = math.radians(p.shaft_tilt_deg)
        self.s = _unit([-math.sin(tau), 0.0, -math.cos(tau)])  # down the shaft, distal end medial
        sin_ns = float(np.linalg.norm(np.cross(self.n, self.s)))
        self.L_J = p.offset_mm / sin_ns
        self.J = self.L_J * self.n  # where the neck axis meets the shaft axis
        self.neck_shaft_angle_deg = float(np.degrees(np.arccos(np.clip(-self.n @ self.s, -1, 1))))
        rs = p.shaft_radius
        self.shaft_top = 14.0
        # greater trochanter: tip near the level of the head centre, lateral to the neck base
        self.gt_c = np.array([self.J[0] + rs - 3.0, self.J[1] - 3.0, self.J[2] + 21.0])
        self.gt_ax = (11.0, 15.0, 18.0)
        lt_axis = self.J + 36.0 * self.s
        self.lt_c = lt_axis + (rs + 1.0) * _unit([-0.55, -0.83, 0.0])
        self.lt_ax = (7.0, 7.0, 11.0)
        fov_dir = _unit([-0.55, -0.15, -0.82])  # fovea: medial, slightly posterior and inferior
        self.fovea_c = (self.r + 1.5) * fov_dir
        self.fovea_r = 5.0

        # acetabulum --------------------------------------------------------------------------
        self.R_in = self.r + 2 * p.cartilage_mm + p.joint_gap_mm
        H = math.radians(p.cup_coverage_deg)
        gam = math.radians(p.acetabular_version_deg)
        ce = math.radians(p.ce_deg)
        # The cup axis a is chosen so that the rim cuts the mid-coronal plane laterally exactly at
        # the centre-edge angle: d_E.a = cos(gamma) cos(iota + CE) = cos(H).
        iota = math.acos(math.cos(H) / math.cos(gam)) - ce
        self.a = _unit([-math.sin(iota) * math.cos(gam), -math.sin(gam), math.cos(iota) * math.cos(gam)])
        self.cosH, self.sinH = math.cos(H), math.sin(H)
        self.cosH_lab = math.cos(H + math.radians(9.0))
        thm = math.radians(p.roof_medial_deg)
        phf = math.radians(self.FOSSA_HALF_ANGLE_DEG)
        self.f = np.array([-math.sin(thm + phf), 0.0, math.cos(thm + phf)])
        self.cos_f_in, self.cos_f_out = math.cos(phf - math.radians(3)), math.cos(phf + math.radians(3))
        self.edge_local = self.R_in * np.array([math.sin(ce), 0.0, math.cos(ce)])
        self.roof_medial_local = self.R_in * np.array([-math.sin(thm), 0.0, math.cos(thm)])
        R = self.R_in
        self.ilium = ((-10.0, -8.0, R + 5.0), (24.0, -22.0, 125.0), 23.0, 9.0)
        self.ischium = ((-14.0, -24.0, -R + 4.0), (-18.0, -40.0, -78.0), 11.0, 15.0)
        mid_u = self._midline_u()
        self.pubis_sup = ((-R + 6.0, 20.0, -20.0), (mid_u + 2.0, 40.0, -36.0), 9.0, 8.0)
        self.pubis_inf = ((mid_u + 2.0, 38.0, -50.0), (-18.0, -36.0, -80.0), 7.0, 9.0)

        # texture fields ----------------------------------------------------------------------
        rng = np.random.default_rng([p.seed, 7])
        self.tex_red = WaveField.random(rng, 4, (12.0, 30.0))
        self.tex_scar = WaveField.random(rng, 2, (20.0, 40.0))

        # lesion ------------------------------------------------------------------------------
        self.lesion = p.lesion
        if p.lesion is not None:
            self._init_lesion(p.lesion)

    def _midline_u(self) -> float:
        # Provisional symphysis position (92 mm medial to the head); Subject calls set_midline()
        # with the body's actual midline.
        return -(92.0 - 2.0)

    def set_midline(self, midline_x: float) -> None:
        """Make the pubic rami end 2 mm short of the body midline (the symphyseal gap)."""
        mid_u = self.sigma * (midline_x - self.c[0])
        a, b, ra, rb = self.pubis_sup
        self.pubis_sup = (a, (mid_u + 2.0, b[1], b[2]), ra, rb)
        a, b, ra, rb = self.pubis_inf
        self.pubis_inf = ((mid_u + 2.0, a[1], a[2]), b, ra, rb)

    # -- lesion ---------------------------------------------------------------------------------
    def _init_lesion(self, les: LesionParams) -> None:
        d = _unit(les.direction)
        t2 = _unit(np.array([0.0, 1.0, 0.0]) - d[1] * d)  # antero-posterior tangent
        t1 = np.cross(t2, d)  # coronal tangent
        self.les_frame = np.stack([d, t1, t2])
        rng = np.random.default_rng([les.seed, 11])
        self.les_wave = WaveField.random(rng, 4, les.wavelength_mm)
        # Peak of a 4-wave unit-variance field is ~2: scale so the waviness peaks near wave_mm.
        self.les_wave_amp = les.wave_mm / 2.0
        self.les_band = WaveField.random(rng, 2, (12.0, 20.0))
        self.les_scale = 1.0
        self.les_scale = _calibrate_scale(self, les.nf_pct)
        # Drill track: lateral cortex below the greater trochanter, through the neck, ending
        # in the middle depth of the baseline lesion.
        depth = self._lesion_depth()
        self.track_end = (self.r - 0.5 * depth) * d
        self.track_start, self.track_entry = self._track_entry(self.track_end)
        self.track_radius = 1.75

    def _semi_axes(self, scale=None):
        s = (self.les_scale if scale is None else scale) * self.r
        return np.asarray(self.lesion.shape, dtype=np.float64) * s

    def _lesion_depth(self) -> float:
        """Depth of the baseline lesion along its axis from the head surface, mm."""
        a = self._semi_axes()
        shift = self.lesion.centre_shift * a[0]
        return float(a[0] - shift)

    def lesion_distance(self, u, v, w, change_mm: float = 0.0, pref=None, scale=None):
        """Signed distance-like function of the lesion margin (outer band edge), mm.

        Negative inside the lesion (before restriction to the head). ``change_mm`` moves the
        margin inward (positive: regeneration) in proportion to the preference weights.
        """
        les = self.lesion
        a = self._semi_axes(scale)
        fr = self.les_frame
        qc = ((self.r + les.centre_shift * a[0]) * fr[0]).tolist()
        a = a.tolist()
        fr = fr.tolist()
        x0, y0, z0 = u - qc[0], v - qc[1], w - qc[2]
        e0 = x0 * fr[0][0] + y0 * fr[0][1] + z0 * fr[0][2]
        e1 = x0 * fr[1][0] + y0 * fr[1][1] + z0 * fr[1][2]
        e2 = x0 * fr[2][0] + y0 * fr[2][1] + z0 * fr[2][2]
        d = _ellipsoid_sdf(e0, e1, e2, a[0], a[1], a[2])
        d = d + self.les_wave_amp * self.les_wave(u, v, w)
        if change_mm != 0.0:
            d = d + change_mm * self._change_weight(u, v, pref)
        return d

    def _change_weight(self, u, v, pref):
        base, lat, post, med, ant = pref if pref is not None else (1.0, 0.0, 0.0, 0.0, 0.0)
        u_ref = float(self.edge_local[0])
        out = base + lat * _sigmoid((u - 0.5 * u_ref) / 3.0) + post * _sigmoid(-v / 3.0)
        if med:
            out = out + med * _sigmoid(-u / 3.0)
        if ant:
            out = out + ant * _sigmoid(v / 3.0)
        return out

    def band_thickness(self, u, v, w):
        lo, hi = self.lesion.band_mm
        return 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.clip(self.les_band(u, v, w), -1.0, 1.0)

    def track_distance(self, u, v, w):
        """Distance to the drill-track surface (negative inside the 3.5 mm tube), mm."""
        return _segment_sdf(u, v, w, self.track_start, self.track_end, self.track_radius)

    def _track_entry(self, end):
        """Entry on the lateral femoral cortex ~18 mm below the greater trochanter's lower pole."""
        z_entry = self.gt_c[2] - self.gt_ax[2] - 18.0
        q = (z_entry - self.J[2]) / self.s[2]
        axis_pt = self.J + q * self.s
        lat = _unit(np.array([1.0, 0.0, 0.0]) - self.s[0] * self.s)
        # march outward along the radial direction to the femur surface
        for rr in np.arange(5.0, 40.0, 0.05):
            pt = axis_pt + rr * lat
            if self.femur_sdf(*[np.array([x]) for x in pt])[0] > 0:
                break
        entry = pt
        direction = _unit(end - entry)
        start = entry - 3.0 * direction  # start outside the cortex so the cortical hole is complete
        return start, entry

    # -- collapse dent ----------------------------------------------------------------------------
    def dent(self, state: HipState | None):
        """(unit axis a, depth h, crater radius rd or None) of a visit's dent
        (:attr:`HipState.dent_mm`), or None."""
        if state is None or state.dent_mm <= 0:
            return None
        if state.dent_direction is not None:
            axis = state.dent_direction
        else:
            axis = self.lesion.direction if self.lesion is not None else (0.0, 0.0, 1.0)
        rd = None if state.dent_radius_mm is None else float(state.dent_radius_mm)
        return _unit(axis), float(state.dent_mm), rd

    def dent_distance(self, u, v, w, dent):
        """Signed distance-like function of the removed region's complement near the head: < 0
        inside the dent's cut (above the plane (p . a) = r - h, or inside the crater ball)."""
        a, h, rd = dent
        a = a.tolist()
        if rd is None:
            return (self.r - h) - (u * a[0] + v * a[1] + w * a[2])
        k = self.r - h + rd
        return np.sqrt((u - k * a[0]) ** 2 + (v - k * a[1]) ** 2 + (w - k * a[2]) ** 2) - rd

    def _cut_dent(self, d, u, v, w, dent, rho=None):
        """A distance function with the dent removed: the set minus {dent_distance < 0, |p| < r + 1}."""
        if dent is None:
            return d
        if rho is None:
            rho = np.sqrt(u * u + v * v + w * w)
        return np.maximum(d, np.minimum(-self.dent_distance(u, v, w, dent), self.r + 1.0 - rho))

    # -- femur ----------------------------------------------------------------------------------
    def neck_radius(self, t):
        """Neck radius at distance t along the neck axis: the waist rho up to 3 mm past the cut
        plane, then widening smoothly into the intertrochanteric region."""
        x = np.maximum(t - (self.h + 3.0), 0.0)
        m, k = 10.0, 0.5
        return self.rho + np.where(x < m, k * x * x / (2 * m), k * (x - m / 2))

    def femur_sdf(self, u, v, w, parts=False, dent=None):
        n, s, J = self.n.tolist(), self.s.tolist(), self.J.tolist()
        rr2 = u * u + v * v + w * w
        rho = np.sqrt(rr2)
        t = u * n[0] + v * n[1] + w * n[2]
        radn = np.sqrt(np.maximum(rr2 - t * t, 0.0))
        d_neck = np.maximum(np.maximum(radn - self.neck_radius(t), -t), t - (self.L_J + 6.0))
        pu, pv, pw = u - J[0], v - J[1], w - J[2]
        q = pu * s[0] + pv * s[1] + pw * s[2]
        rads = np.sqrt(np.maximum(pu * pu + pv * pv + pw * pw - q * q, 0.0))
        rs = self.params.shaft_radius + 7.0 * _sigmoid(-(q - 25.0) / 8.0)
        d_shaft = np.maximum(rads - rs, -q - self.shaft_top)
        d_gt = _ell(u, v, w, self.gt_c, self.gt_ax)
        d_lt = _ell(u, v, w, self.lt_c, self.lt_ax)
        d = _smin(d_neck, d_shaft, 8.0)
        d = _smin(d, d_gt, 8.0)
        d = _smin(d, d_lt, 5.0)
        d_ball = rho - self.r
        # Hard union with the ball: the head is exactly the sphere, so the neck-plane head truth
        # (femur ∩ ball ∩ half-space) is the ball cut by the plane.
        d = np.minimum(d, d_ball)
        if self.params.fovea:
            fc = self.fovea_c.tolist()
            d_fov = np.sqrt((u - fc[0]) ** 2 + (v - fc[1]) ** 2 + (w - fc[2]) ** 2) - self.fovea_r
            d = np.maximum(d, -d_fov)
        if dent is not None:
            d = self._cut_dent(d, u, v, w, dent, rho)
        if parts:
            return d, dict(rho=rho, t=t, q=q, d_neck=d_neck, d_ball=d_ball)
        return d

    def head_sdf(self, u, v, w, rho=None, t=None, dent=None):
        """Neck-plane head: femur ∩ ball(c, r) ∩ {(p-c).n <= sqrt(r^2 - rho^2)}, less a
        collapse dent (:meth:`dent`) when one is given.

        The femur holds the whole cut ball except the foveal pit (the head is a hard union with
        the ball, and the neck inside the ball is narrower than the ball), so the set is computed
        without the femur's distance function; tests check the equivalence.
        """
        if rho is None:
            rho = np.sqrt(u * u + v * v + w * w)
        if t is None:
            n = self.n.tolist()
            t = u * n[0] + v * n[1] + w * n[2]
        d = np.maximum(rho - self.r, t - self.h)
        if self.params.fovea:
            fc = self.fovea_c.tolist()
            d_fov = np.sqrt((u - fc[0]) ** 2 + (v - fc[1]) ** 2 + (w - fc[2]) ** 2) - self.fovea_r
            d = np.maximum(d, -d_fov)
        if dent is not None:
            d = self._cut_dent(d, u, v, w, dent, rho)
        return d

    def lesion_set_sdf(self, u, v, w, state: HipState, change_mm: float, head=None):
        """Truth lesion: margin region ∩ head, minus the drill track when present."""
        if head is None:
            head = self.head_sdf(u, v, w)
        d = np.maximum(self.lesion_distance(u, v, w, change_mm, state.preference), head)
        if state.track:
            d = np.maximum(d, -self.track_distance(u, v, w))
        return d

    # -- hip bone -------------------------------------------------------------------------------
    def _cup_parts(self, u, v, w, rho):
        inv = 1.0 / np.maximum(rho, 1e-6)
        a, f = self.a.tolist(), self.f.tolist()
        da = (u * a[0] + v * a[1] + w * a[2]) * inv
        df = (u * f[0] + v * f[1] + w * f[2]) * inv
        wf = _sstep(df, self.cos_f_out, self.cos_f_in)  # 1 in the fossa
        r_inner = self.R_in + self.FOSSA_DEPTH_MM * wf
        roof = _sstep(w * inv, 0.45, 0.8) * (1.0 - wf)
        r_outer = r_inner + 3.5 + 5.0 * roof
        cone = (self.cosH - da) * rho / self.sinH  # > 0 outside the cup's coverage
        return da, wf, r_inner, r_outer, roof, cone

    def hipbone_sdf(self, u, v, w, rho=None, cup=None):
        if rho is None:
            rho = np.sqrt(u * u + v * v + w * w)
        if cup is None:
            cup = self._cup_parts(u, v, w, rho)
        da, wf, r_inner, r_outer, roof, cone = cup
        d_cup = np.maximum(np.maximum(r_inner - rho, rho - r_outer), cone)
        a, b, ra, rb = self.ilium
        d_il = _seg(u, v, w, a, b, ra, rb, scale=(1.0, 0.55, 1.0))
        d = np.minimum(d_cup, d_il)
        a, b, ra, rb = self.ischium
        d = _smin(d, _seg(u, v, w, a, b, ra, rb, scale=(1.0, 0.8, 1.0)), 6.0)
        a, b, ra, rb = self.pubis_sup
        d = _smin(d, _seg(u, v, w, a, b, ra, rb), 5.0)
        a, b, ra, rb = self.pubis_inf
        d = _smin(d, _seg(u, v, w, a, b, ra, rb), 4.0)
        # keep the joint cavity free of bone: the union's fillets must not reach the head
        d = np.maximum(d, r_inner - rho)
        return d

    # -- rendering ------------------------------------------------------------------------------
    def render(self, u, v, w, state: HipState, change_mm: float, val, dist, texa):
        """Paint this hip's tissues over ``val`` and their texture amplitude over ``texa``, and
        lower ``dist`` to the nearest boundary (all in place; float32, hip-local coordinates)."""
        ct = self.contrast
        p = self.params
        fem, fp = self.femur_sdf(u, v, w, parts=True, dent=self.dent(state))
        rho, t, q = fp["rho"], fp["t"], fp["q"]
        cup = self._cup_parts(u, v, w, rho)
        da, wf, r_inner, r_outer, roof, cone = cup
        hb = self.hipbone_sdf(u, v, w, rho=rho, cup=cup)

        def near(x):
            np.minimum(dist, np.abs(x), out=dist)

        def paint(mask, value, amp):
            val[mask] = value
            texa[mask] = amp

        # joint capsule: a 2 mm sleeve around the head (with cartilage) and neck, inserting at
        # the intertrochanteric region; inside it a film of synovial fluid (effusion).
        eff = p.effusion_mm
        cap_in = np.minimum(rho - (self.r + p.cartilage_mm + 0.6 + 0.5 * eff), fp["d_neck"] - (0.8 + eff))
        region = (t > -2.0) & (t < self.L_J - 14.0) & (cone > -2.0)
        paint(region & (cap_in > 0) & (cap_in < 3.4), ct.fat, 0.015)
        paint(region & (cap_in >= 0) & (cap_in <= 2.0), ct.capsule, 0.05)
        paint(region & (cap_in < 0) & (fem > 0), ct.joint_fluid, 0.02)
        near(np.where(region, np.minimum(np.abs(cap_in), np.abs(cap_in - 2.0)), 99.0))

        # labrum: a dark triangle beyond the rim, widest at the rim, tapering outward
        s_l = (self.cosH - da) * (1.0 / (self.cosH - self.cosH_lab))
        lo = self.R_in - 1.6 + 1.2 * s_l
        hi = self.R_in + 4.0 - 4.6 * s_l
        paint((s_l >= 0) & (s_l <= 1) & (rho >= lo) & (rho <= hi), ct.labrum, 0.05)
        near(np.where((s_l > -0.5) & (s_l < 1.5), np.minimum(np.abs(rho - lo), np.abs(rho - hi)), 99.0))

        # cartilage, joint film, pulvinar fat in the fossa
        cov = cone < 0
        dent = self.dent(state)
        gap = None
        if dent is not None and state.dent_cartilage_follows:
            # the cartilage sank with the bone: a layer of its thickness over the dented surface,
            # and joint fluid between it and where it was
            cut = -self.dent_distance(u, v, w, dent)
            above = np.maximum(rho - self.r, cut)
            head_cart = (above > 0) & (above <= p.cartilage_mm) & (t < self.h - 0.5)
            gap = (cut > p.cartilage_mm) & (rho <= self.r + p.cartilage_mm) & (t < self.h - 0.5)
            near(np.where(rho < self.r + p.cartilage_mm + 1.0, above - p.cartilage_mm, 99.0))
        else:
            head_cart = (rho > self.r) & (rho <= self.r + p.cartilage_mm) & (t < self.h - 0.5)
        if p.fovea:
            fc = self.fovea_c.tolist()
            d_fov = np.sqrt((u - fc[0]) ** 2 + (v - fc[1]) ** 2 + (w - fc[2]) ** 2) - self.fovea_r
            head_cart &= d_fov > 1.0
        paint(head_cart, ct.cartilage, 0.03)
        if gap is not None:
            paint(gap, ct.joint_fluid, 0.02)
        paint(cov & (rho > self.r + p.cartilage_mm) & (rho < r_inner), ct.joint_fluid, 0.02)
        paint(cov & (wf < 0.5) & (rho >= self.R_in - p.cartilage_mm) & (rho < r_inner), ct.cartilage, 0.03)
        paint(cov & (wf >= 0.5) & (rho > self.r + p.cartilage_mm + 0.8) & (rho < r_inner), ct.pulvinar_fat, 0.04)
        near(rho - self.r - p.cartilage_mm)
        near(rho - (self.R_in - p.cartilage_mm))
        near(fem)
        near(hb)

        # bone interiors: textures only where they are seen (evaluating them everywhere
        # would dominate the cost)
        bone = np.nonzero((fem <= 0) | (hb <= 0))[0]
        if bone.size == 0:
            return
        ub, vb, wb = u[bone], v[bone], w[bone]
        femb, hbb, tb, qb, rhob = fem[bone], hb[bone], t[bone], q[bone], rho[bone]
        vals, dsts, texs = val[bone], dist[bone], texa[bone]

        def nearb(x):
            np.minimum(dsts, np.abs(x), out=dsts)

        def paintb(mask, value, amp):
            vals[mask] = value
            texs[mask] = amp

        # hip bone: cortex, thicker under the weight-bearing roof (the sourcil)
        inb = hbb <= 0
        thick = 1.6 + 1.8 * roof[bone]
        paintb(inb, ct.cortex, 0.0)
        paintb(hbb < -thick, ct.pelvic_marrow, 0.07)
        nearb(np.where(hbb < 3.0, hbb + thick, 99.0))

        # femur
        inf = femb <= 0
        cthick = 1.1 + 0.9 * _sstep(tb, self.h - 2.0, self.h + 6.0) + 3.2 * _sstep(qb, 15.0, 55.0)
        marrow = femb < -cthick
        nearb(np.where(femb < 3.0, femb + cthick, 99.0))
        red = 0.0
        if p.red_marrow > 0 or p.red_marrow_head > 0:
            patch = _sigmoid(3.0 * (self.tex_red(ub, vb, wb) - 0.3))
            meta = _sstep(tb, self.h - 4.0, self.h + 12.0)
            red = patch * (p.red_marrow * meta + p.red_marrow_head * (1.0 - meta))
        mval = ct.yellow_marrow * (1.0 - red) + ct.red_marrow * red
        # physeal scar: a faint wavy line across the head base, roughly perpendicular to the neck
        scar_d = np.abs(tb - (0.45 * self.r + 1.2 * self.tex_scar(ub, vb, wb))) - 0.5
        paintb(inf, ct.cortex, 0.0)
        paintb(marrow, mval[marrow] if np.ndim(mval) else mval, 0.045)
        paintb(marrow & (scar_d < 0), ct.physeal_scar, 0.05)
        nearb(np.where(inf, scar_d, 99.0))

        if self.lesion is not None:
            sub = np.nonzero(marrow & (rhob < self.r + 0.5) & (tb < self.h + 2.0))[0]
            if sub.size:
                us, vs, ws = ub[sub], vb[sub], wb[sub]
                d0 = self.lesion_distance(us, vs, ws)
                dt = d0 if change_mm == 0.0 else self.lesion_distance(us, vs, ws, change_mm, state.preference)
                band_t = self.band_thickness(us, vs, ws)
                mit = state.mitchell or self.lesion.mitchell
                cur, tcur = vals[sub], texs[sub]
                regen = (d0 <= 0) & (dt > 0)
                cur[regen], tcur[regen] = ct.regenerated, 0.09  # healing bone: mottled
                core = dt < -band_t
                cur[core], tcur[core] = ct.core(mit), 0.07
                band = (dt <= 0) & ~core
                cur[band], tcur[band] = ct.band, 0.15
                vals[sub], texs[sub] = cur, tcur
                dsub = dsts[sub]
                np.minimum(dsub, np.abs(dt), out=dsub)
                np.minimum(dsub, np.abs(dt + band_t), out=dsub)
                if change_mm != 0.0:
                    np.minimum(dsub, np.abs(d0), out=dsub)
                dsts[sub] = dsub
            if state.track:
                tr = self.track_distance(ub, vb, wb)
                sig = ct.track if state.track_signal is None else state.track_signal
                paintb(inf & (tr <= 0), sig, 0.1)
                nearb(tr)
        val[bone], dist[bone], texa[bone] = vals, dsts, texs

    # -- landmarks in body coordinates ----------------------------------------------------------
    def to_body(self, local) -> np.ndarray:
        local = np.asarray(local, dtype=np.float64)
        return self.c + np.array([self.sigma * local[0], local[1], local[2]])

    def dir_to_body(self, local) -> np.ndarray:
        local = np.asarray(local, dtype=np.float64)
        return np.array([self.sigma * local[0], local[1], local[2]])


# ----------------------------------------------------------------------------------------------
# the whole subject
# ----------------------------------------------------------------------------------------------
class Subject:
    """Body + both hips: the continuous model of one subject, in body coordinates."""

    def __init__(self, params: SubjectParams):
        self.params = params
        self.contrast = params.contrast
        b = params.body
        self.body = b
        self.hips = {"right": Hip(params.right, params.contrast), "left": Hip(params.left, params.contrast)}
        for hip in self.hips.values():
            hip.set_midline(b.midline_x)
        rng = np.random.default_rng([b.seed, 3])
        self.tex_fat = WaveField.random(rng, 3, (90.0, 180.0))
        self.septa = WaveField.random(rng, 5, (40.0, 90.0))
        self._septa_g = self.septa.grad_rms
        self._changes: dict = {}
        hr, hl = self.hips["right"].c, self.hips["left"].c
        # The thighs meet at the midline (adductors touching) and their lateral skin stays just
        # inside the trunk's, so the outline has no step.
        self.thigh_x = {"right": hr[0] - 8.0, "left": hl[0] + 8.0}
        self.thigh_r = float(b.half_width_mm + 2.0 - 0.5 * abs(hr[0] - hl[0]) + 8.0)
        self.cavity_half = 0.5 * abs(hr[0] - hl[0]) - 44.0

    # -- calibrated lesion change per visit ----------------------------------------------------
    def change_mm(self, side: str, state: HipState) -> float:
        """Margin displacement (mm) reaching ``state.regeneration_pct``; cached."""
        hip = self.hips[side]
        if hip.lesion is None or state.regeneration_pct == 0.0:
            return 0.0
        key = (side, state.regeneration_pct, tuple(state.preference), state.track)
        if key not in self._changes:
            self._changes[key] = _calibrate_change(hip, state)
        return self._changes[key]

    # -- body SDFs ------------------------------------------------------------------------------
    def body_sdf(self, x, y, z):
        """Skin surface: an elliptic trunk, widest at the trochanters, over two thighs."""
        b = self.body
        zt = b.pelvis_z - 15.0
        bulge = 10.0 * np.exp(-(((z - zt) * (1.0 / 55.0)) ** 2))
        hw = b.half_width_mm + bulge
        hd = b.half_depth_mm
        px, py = x - b.midline_x, y - (b.pelvis_y - 12.0)
        # ellipse distance bound k0 (k0 - 1) / k1, accurate near the skin
        k0 = np.sqrt((px / hw) ** 2 + (py * (1.0 / hd)) ** 2)
        k1 = np.sqrt((px / (hw * hw)) ** 2 + (py * (1.0 / (hd * hd))) ** 2)
        d_tr = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
        z_crotch = b.pelvis_z - 95.0
        d_tr = np.maximum(d_tr, z_crotch - z)
        d = d_tr
        for side in ("right", "left"):
            tx = self.thigh_x[side]
            dt = np.sqrt((x - tx) ** 2 + (y - (b.pelvis_y - 8.0)) ** 2) - self.thigh_r
            # the thigh reaches well up into the trunk so the union has no internal seam
            dt = np.maximum(dt, z - (z_crotch + 60.0))
            d = _smin(d, dt, 15.0)
        return d

    def render_points(self, x, y, z, visit: Visit):
        """Noise-free T1 signal and distance to the nearest tissue boundary at body points.

        Parameters
        ----------
        x, y, z : ndarray (float32), body RAS mm

        Returns
        -------
        val : ndarray, signal (scanner units)
        dist : ndarray, lower bound of the distance to the nearest tissue boundary, mm
        texa : ndarray, relative amplitude of the tissue's fine texture (muscle fibres,
            trabecular mottling), applied per voxel by the renderer
        """
        ct = self.contrast
        b = self.body
        val = np.zeros(x.shape, dtype=F32)
        dist = np.full(x.shape, 1e3, dtype=F32)
        texa = np.zeros(x.shape, dtype=F32)

        def near(d):
            np.minimum(dist, np.abs(d), out=dist)

        dbody = self.body_sdf(x, y, z)
        near(dbody)
        ins = np.nonzero(dbody <= 0)[0]
        if ins.size:
            xi, yi, zi, db = x[ins], y[ins], z[ins], dbody[ins]
            vi = np.full(ins.size, ct.muscle, dtype=F32)
            ti = np.full(ins.size, 0.07, dtype=F32)
            di = dist[ins]
            sep = np.abs(self.septa(xi, yi, zi)) * (1.0 / self._septa_g) - 0.6  # sheets ~1.2 mm
            np.minimum(di, np.abs(sep), out=di)
            vi[sep < 0], ti[sep < 0] = ct.fat, 0.015
            shallow = np.nonzero(db > -2.0 * b.fat_mm)[0]
            fat_t = b.fat_mm * (1.0 + 0.35 * self.tex_fat(xi[shallow], yi[shallow], zi[shallow]))
            dsh = db[shallow]
            vs, ts = vi[shallow], ti[shallow]
            vs[dsh > -fat_t], ts[dsh > -fat_t] = ct.fat, 0.015
            vs[dsh > -1.6], ts[dsh > -1.6] = ct.skin, 0.03
            vi[shallow], ti[shallow] = vs, ts
            ds = di[shallow]
            np.minimum(ds, np.abs(dsh + fat_t), out=ds)
            np.minimum(ds, np.abs(dsh + 1.6), out=ds)
            di[shallow] = ds
            val[ins], dist[ins], texa[ins] = vi, di, ti

        # lesser pelvis: fat above the pelvic floor, lined by obturator internus (the muscle left
        # between it and the bone), holding the bladder and the rectum; thin strands of vessels
        pc = (b.midline_x, b.pelvis_y - 5.0, b.pelvis_z + 25.0)
        d_cav = _ell(x, y, z, pc, (self.cavity_half, 62.0, 65.0))
        cav = np.nonzero(d_cav < 0)[0]
        if cav.size:
            strand = np.abs(self.septa(x[cav] * 1.7, y[cav] * 1.7, z[cav] * 1.7)) * (1.0 / self._septa_g) < 0.35
            vc = np.where(strand, ct.muscle, ct.fat).astype(F32)
            val[cav], texa[cav] = vc, 0.02
        near(d_cav)
        d_re = _ell(x, y, z, (b.midline_x + 4.0, b.pelvis_y - 50.0, b.pelvis_z + 15.0), (17.0, 16.0, 45.0))
        val[d_re < 0], texa[d_re < 0] = ct.bowel, 0.08
        near(d_re)
        d_bl = _ell(x, y, z, (b.midline_x, b.pelvis_y + 12.0, b.pelvis_z + 4.0), (40.0, 36.0, 36.0))
        val[d_bl < 0], texa[d_bl < 0] = ct.urine, 0.01
        near(d_bl)

        for side, hip in self.hips.items():
            sg = hip.sigma
            # a hip's structures stay on its own side of the symphysis (2 mm gap): points more
            # than 8 mm across the midline are > 6 mm from them and are skipped.
            sel = np.nonzero(sg * (x - b.midline_x) > -8.0)[0]
            if sel.size == 0:
                continue
            u = sg * (x[sel] - float(hip.c[0]))
            v = y[sel] - float(hip.c[1])
            w = z[sel] - float(hip.c[2])
            vs, ds, ts = val[sel], dist[sel], texa[sel]
            self._render_tendons(hip, u, v, w, vs, ds, ts)
            hip.render(u, v, w, visit.state(side), self.change_mm(side, visit.state(side)), vs, ds, ts)
            val[sel], dist[sel], texa[sel] = vs, ds, ts
        out = dbody > 0
        val[out], texa[out] = 0.0, 0.0
        return val, dist, texa

    def _render_tendons(self, hip, u, v, w, val, dist, texa):
        ct = self.contrast
        g, ax = hip.gt_c, hip.gt_ax
        top = (g[0] + 0.3 * ax[0], g[1] - 2.0, g[2] + ax[2] - 2.0)
        segs = [
            # gluteus medius tendon onto the greater trochanter
            (top, (top[0] + 6.0, top[1] - 4.0, top[2] + 32.0), 2.2, 3.2),
            # iliopsoas tendon: anterior to the joint, down to the lesser trochanter
            ((-12.0, 30.0, 40.0), (-4.0, 31.0, -6.0), 3.0, 3.0),
            ((-4.0, 31.0, -6.0), tuple(hip.lt_c + np.array([-2.0, 3.0, 4.0])), 3.0, 2.6),
        ]
        for a, bb, ra, rb in segs:
            d = _seg(u, v, w, a, bb, ra, rb)
            val[d < 0], texa[d < 0] = ct.tendon, 0.05
            np.minimum(dist, np.abs(d), out=dist)


def build_subject(params: SubjectParams) -> Subject:
    """Build the continuous model (lesion sizes are calibrated here)."""
    return Subject(params)


# ----------------------------------------------------------------------------------------------
# integration of the continuous model (truth)
# ----------------------------------------------------------------------------------------------
def _lesion_bbox(hip: Hip, pad: float):
    """Hip-local box holding the lesion (inside the head ball), padded."""
    r = hip.r
    lo = np.full(3, -r - pad)
    hi = np.full(3, r + pad)
    a = hip._semi_axes()
    fr = hip.les_frame
    qc = (hip.r + hip.lesion.centre_shift * a[0]) * fr[0]
    half = np.sqrt(((fr.T * a[None, :]) ** 2).sum(axis=1))
    return np.maximum(lo, qc - half - pad), np.minimum(hi, qc + half + pad)


def _grid_chunks(lo, hi, h, max_points=2_000_000, dtype=F32):
    """Midpoint-rule grid over a box, yielded as slabs of (u, v, w) arrays."""
    axes = [np.arange(lo[i] + h / 2, hi[i], h) for i in range(3)]
    per_slab = max(1, max_points // max(1, len(axes[1]) * len(axes[2])))
    V, W = np.meshgrid(axes[1], axes[2], indexing="ij")
    V, W = V.ravel().astype(dtype), W.ravel().astype(dtype)
    for i0 in range(0, len(axes[0]), per_slab):
        us = axes[0][i0 : i0 + per_slab].astype(dtype)
        yield np.repeat(us, V.size), np.tile(V, us.size), np.tile(W, us.size)


def _head_points(hip: Hip, h: float, lo=None, hi=None):
    """Midpoint-grid points (spacing h) inside the head, within an optional box; cached."""
    key = (h, None if lo is None else tuple(np.round(lo, 6)), None if hi is None else tuple(np.round(hi, 6)))
    cache = hip.__dict__.setdefault("_head_pts_cache", {})
    if key not in cache:
        blo = np.full(3, -hip.r) if lo is None else np.maximum(lo, -hip.r)
        bhi = np.full(3, hip.r) if hi is None else np.minimum(hi, hip.r)
        # anchor the grid at the head centre so every box shares the same lattice
        blo = np.floor(blo / h) * h
        bhi = np.ceil(bhi / h) * h
        parts = []
        for u, v, w in _grid_chunks(blo, bhi, h):
            k = hip.head_sdf(u, v, w) <= 0
            parts.append(np.stack([u[k], v[k], w[k]]))
        cache[key] = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=F32)
    return cache[key]


def _lesion_volume(hip: Hip, state: HipState, change_mm: float, h: float, scale=None) -> float:
    """Continuous lesion volume (mL) by the midpoint rule on head points of spacing h."""
    saved = hip.les_scale
    if scale is not None:
        hip.les_scale = scale
    try:
        pts = _head_points(hip, h)
        u, v, w = pts
        d = hip.lesion_distance(u, v, w, change_mm, state.preference)
        inside = d <= 0
        if state.track:
            inside &= hip.track_distance(u, v, w) > 0
        n = int(np.count_nonzero(inside))
    finally:
        hip.les_scale = saved
    return n * h**3 / 1000.0


def dent_missing_volume_ml(r: float, h: float, rd: float | None = None) -> float:
    """Volume (mL) a dent of depth ``h`` mm removes from a ball of radius ``r`` mm: a spherical cap
    pi h^2 (3 r - h) / 3 for a flat cut (``rd`` None); for a crater of radius ``rd`` the lens
    shared by the two balls, centres d = r - h + rd apart:
    pi (r + rd - d)^2 (d^2 + 2 d rd - 3 rd^2 + 2 d r + 6 rd r - 3 r^2) / (12 d)."""
    if rd is None:
        return math.pi * h * h * (3.0 * r - h) / 3.0 / 1000.0
    d = r - h + rd
    return (math.pi * h * h * (d * d + 2 * d * rd - 3 * rd * rd + 2 * d * r + 6 * rd * r - 3 * r * r)
            / (12.0 * d) / 1000.0)


def head_volume_ml(hip: Hip) -> float:
    """Continuous neck-plane head volume: ball cut by the neck plane (analytic), minus the fovea."""
    r, h = hip.r, hip.h
    cap = math.pi * (r - h) ** 2 * (3 * r - (r - h)) / 3.0
    v = 4.0 / 3.0 * math.pi * r**3 - cap
    if hip.params.fovea:
        fc, fr = hip.fovea_c, hip.fovea_r
        step = 0.1
        n = 0
        for u, vv, w in _grid_chunks(fc - fr, fc + fr, step):
            inside_fov = (u - fc[0]) ** 2 + (vv - fc[1]) ** 2 + (w - fc[2]) ** 2 < fr * fr
            inhead = (u * u + vv * vv + w * w <= r * r) & (u * hip.n[0] + vv * hip.n[1] + w * hip.n[2] <= h)
            n += int(np.count_nonzero(inside_fov & inhead))
        v -= n * step**3
    return v / 1000.0


def _calibrate_scale(hip: Hip, nf_pct: float) -> float:
    """Ellipsoid scale giving the target necrotic fraction (bisection on a 0.5 mm grid)."""
    target = nf_pct / 100.0 * head_volume_ml(hip)
    lo, hi = 0.2, 2.0
    base = HipState()
    for _ in range(16):
        mid = 0.5 * (lo + hi)
        if _lesion_volume(hip, base, 0.0, 0.5, scale=mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _calibrate_change(hip: Hip, state: HipState) -> float:
    """Margin displacement giving the target regeneration (track excluded, as in the truth)."""
    v0 = _lesion_volume(hip, HipState(), 0.0, 0.4)
    target = v0 * (1.0 - state.regeneration_pct / 100.0)
    if state.regeneration_pct >= 0:
        lo, hi = 0.0, 2.5 * hip.r
    else:
        lo, hi = -0.8 * hip.r, 0.0
    for _ in range(18):
        mid = 0.5 * (lo + hi)
        if _lesion_volume(hip, state, mid, 0.4) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _zone_names():
    jic = ("A", "B", "C1", "C2")
    ap = ("anterior", "central", "posterior")
    return jic, ap


def _jic_type(u_max, u_med, u_lat):
    if u_max is None:
        return None
    t1 = u_med + (u_lat - u_med) / 3.0
    t2 = u_med + 2.0 * (u_lat - u_med) / 3.0
    if u_max <= t1:
        return "A"
    if u_max <= t2:
        return "B"
    if u_max < u_lat:
        return "C1"
    return "C2"


def _arco_type(u_max, u_lat):
    if u_max is None:
        return None
    if u_max <= 0:
        return 1
    if u_max < u_lat:
        return 2
    return 3


def _arc_deg(member: np.ndarray, step_deg: float) -> float:
    """Angular span of a (single, possibly wrapping) arc of True samples around a circle."""
    if not member.any():
        return 0.0
    if member.all():
        return 360.0
    idx = np.nonzero(member)[0]
    gaps = np.diff(np.concatenate([idx, [idx[0] + member.size]]))
    return float((member.size - (gaps.max() - 1)) * step_deg - step_deg)


def hip_truth(
    subject: Subject,
    side: str,
    visit: Visit,
    baseline: Visit | None = None,
    h: float = 0.25,
) -> dict:
    """Continuous-model truth of one hip at one visit, in that visit's scanner RAS frame.

    Volumes come from the analytic head (ball cut by the neck plane) and a midpoint-rule grid
    of spacing ``h`` mm over the lesion; location follows docs/method.md section 4 with the recorded
    acetabular edge and roof points; regeneration (when ``baseline`` is given) follows section 5
    with the zones of the baseline frame.
    """
    hip = subject.hips[side]
    R, tr = visit.rotation, visit.translation
    sg = hip.sigma

    def world(local):
        return R @ hip.to_body(local) + tr

    c_w = R @ hip.c + tr
    edge_w = world(hip.edge_local)
    roof_w = world(hip.roof_medial_local)
    n_w = R @ hip.dir_to_body(hip.n)
    e_lat = np.array([sg, 0.0, 0.0])
    u_lat = float((edge_w - c_w) @ e_lat)
    u_med = float((roof_w - c_w) @ e_lat)
    hv = head_volume_ml(hip)
    dent = hip.dent(visit.state(side))
    if dent is not None:  # a collapse dent removes its cap from the head (and from the lesion, below)
        hv -= dent_missing_volume_ml(hip.r, dent[1], dent[2])
    out = {
        "side": side,
        "head_center_ras_mm": c_w.tolist(),
        "head_radius_mm": hip.r,
        "neck_axis_ras": n_w.tolist(),
        "waist_radius_mm": hip.rho,
        "neck_plane_offset_mm": hip.h,
        "neck_shaft_angle_deg": hip.neck_shaft_angle_deg,
        "anteversion_deg": hip.params.anteversion_deg,
        "ce_angle_deg": hip.params.ce_deg,
        "acetabular_edge_ras_mm": edge_w.tolist(),
        "acetabular_roof_medial_ras_mm": roof_w.tolist(),
        "weight_bearing": {"u_med_mm": u_med, "u_lat_mm": u_lat, "source": "phantom truth"},
        "head_volume_ml": hv,
        "fovea": bool(hip.params.fovea),
    }
    if dent is not None:  # only then: every other truth record stays as it was
        axis, depth, rd = dent
        out["dent"] = {
            "head_depression_mm": depth,
            "axis_ras": (R @ hip.dir_to_body(axis)).tolist(),
            "deepest_point_ras_mm": world((hip.r - depth) * axis).tolist(),
            "missing_volume_ml": dent_missing_volume_ml(hip.r, depth, rd),
        }
        if rd is not None:
            out["dent"]["crater_radius_mm"] = rd
    state = visit.state(side)
    jic, ap = _zone_names()
    empty = {
        "lesion_volume_ml": 0.0,
        "necrotic_fraction_pct": 0.0,
        "size_class": None,
        "mitchell_class": None,
        "jic_type": None,
        "jic_type_3d": None,
        "arco2021_type": None,
        "zones_ml": {k: 0.0 for k in list(jic) + list(ap) + [f"{a}/{b}" for a in jic for b in ap]},
        "arc_coronal_deg": None,
        "arc_sagittal_deg": None,
        "cna_deg": None,
        "kerboul_grade": None,
        "koo_kim_index": None,
        "centroid_latitude_deg": None,
        "centroid_longitude_deg": None,
        "drill_track": None,
    }
    if hip.lesion is None:
        out.update(empty)
        return out

    chg = subject.change_mm(side, state)
    rot_local = _local_rotation(R, sg)  # hip-local (body) -> hip-local axes of the visit's world

    def frame_of(u, v, w, rot):
        return (
            rot[0, 0] * u + rot[0, 1] * v + rot[0, 2] * w,
            rot[1, 0] * u + rot[1, 1] * v + rot[1, 2] * w,
            rot[2, 0] * u + rot[2, 1] * v + rot[2, 2] * w,
        )

    zones = dict(empty["zones_ml"])
    t1 = u_med + (u_lat - u_med) / 3.0
    t2 = u_med + 2.0 * (u_lat - u_med) / 3.0
    r3 = hip.r / 3.0
    dv = h**3 / 1000.0
    n_les = 0
    cen = np.zeros(3)
    umax3 = -np.inf
    base_stats = None
    if baseline is not None:
        bstate = baseline.state(side)
        bchg = subject.change_mm(side, bstate)
        rot_b = _local_rotation(baseline.rotation, sg)
        edge_b = rot_b @ hip.edge_local
        roof_b = rot_b @ hip.roof_medial_local
        ub_lat, ub_med = float(edge_b[0]), float(roof_b[0])
        bt1 = ub_med + (ub_lat - ub_med) / 3.0
        bt2 = ub_med + 2.0 * (ub_lat - ub_med) / 3.0
        base_stats = {"regenerated": {}, "new": {}, "persistent": {}, "baseline": {}}
        for key in base_stats:
            base_stats[key] = {k: 0 for k in list(jic) + list(ap)}
    pad = 3.0 + 1.5 * abs(min(chg, 0.0))
    lo, hi = _lesion_bbox(hip, pad)
    pts = _head_points(hip, h, lo, hi)
    for sl in _chunked(pts.shape[1], 1_000_000):
        u, v, w = pts[0, sl], pts[1, sl], pts[2, sl]
        head = np.full(u.shape, -1.0, dtype=u.dtype)  # all points are in the head
        les = hip.lesion_set_sdf(u, v, w, state, chg, head=head) <= 0
        # a collapse dent's cap is no longer head, so no longer lesion; the comparison with the
        # baseline below keeps the uncut set (every truth without a dent stays as it was)
        now = les if dent is None else les & (hip.dent_distance(u, v, w, dent) >= 0)
        if now.any():
            uu, vv, ww = frame_of(u[now], v[now], w[now], rot_local)
            n_les += int(now.sum())
            cen += [uu.sum(), vv.sum(), ww.sum()]
            up = uu[ww > 0]
            if up.size:
                umax3 = max(umax3, float(up.max()))
            zj = np.select([uu <= t1, uu <= t2, uu <= u_lat], [0, 1, 2], 3)
            za = np.select([vv > r3, vv >= -r3], [0, 1], 2)
            for i, zn in enumerate(jic):
                zones[zn] += np.count_nonzero(zj == i) * dv
                for j, an in enumerate(ap):
                    zones[f"{zn}/{an}"] += np.count_nonzero((zj == i) & (za == j)) * dv
            for j, an in enumerate(ap):
                zones[an] += np.count_nonzero(za == j) * dv
        if base_stats is not None:
            l0 = hip.lesion_set_sdf(u, v, w, bstate, bchg, head=head) <= 0
            groups = {"regenerated": l0 & ~les, "new": les & ~l0, "persistent": l0 & les, "baseline": l0}
            for key, m in groups.items():
                if not m.any():
                    continue
                uu, vv, ww = frame_of(u[m], v[m], w[m], rot_b)
                zj = np.select([uu <= bt1, uu <= bt2, uu <= ub_lat], [0, 1, 2], 3)
                za = np.select([vv > r3, vv >= -r3], [0, 1], 2)
                for i, zn in enumerate(jic):
                    base_stats[key][zn] += int(np.count_nonzero(zj == i))
                for j, an in enumerate(ap):
                    base_stats[key][an] += int(np.count_nonzero(za == j))

    lv = n_les * dv
    nf = 100.0 * lv / hv
    mit = state.mitchell or hip.lesion.mitchell
    out.update(empty)
    out.update(
        {
            "lesion_volume_ml": lv,
            "necrotic_fraction_pct": nf,
            "size_class": None if lv == 0 else ("A" if nf < 15 else "B" if nf <= 30 else "C"),
            "mitchell_class": mit,
            "zones_ml": zones,
        }
    )
    if n_les:
        cen = cen / n_les
        out["centroid_latitude_deg"] = float(np.degrees(np.arcsin(cen[2] / np.linalg.norm(cen))))
        out["centroid_longitude_deg"] = float(np.degrees(np.arctan2(cen[1], cen[0])))
        out["jic_type_3d"] = _jic_type(umax3 if np.isfinite(umax3) else None, u_med, u_lat)

    # mid-coronal (v = 0) and mid-sagittal (u = 0) planes of the visit's world frame
    inv_rot = rot_local.T
    step = 0.05
    g = np.arange(-hip.r + step / 2, hip.r, step)
    A, B = np.meshgrid(g, g, indexing="ij")
    A, B = A.ravel(), B.ravel()
    zero = np.zeros_like(A)
    lu, lv_, lw = frame_of(A, zero, B, inv_rot)
    inplane = hip.lesion_set_sdf(lu, lv_, lw, state, chg) <= 0
    out["lesion_on_mid_coronal_mm2"] = float(np.count_nonzero(inplane) * step * step)
    u_max = float(A[inplane].max()) if inplane.any() else None
    out["jic_type"] = _jic_type(u_max, u_med, u_lat)
    out["arco2021_type"] = _arco_type(u_max, u_lat)
    out["mid_coronal_u_max_mm"] = u_max

    arc_step = 0.1
    ang = np.radians(np.arange(0.0, 360.0, arc_step))
    rr = hip.r - 0.3  # just under the articular surface
    ca, sa = rr * np.cos(ang), rr * np.sin(ang)
    zero = np.zeros_like(ca)
    lu, lv_, lw = frame_of(ca, zero, sa, inv_rot)  # coronal circle in (u, w)
    arc_c = _arc_deg(hip.lesion_set_sdf(lu, lv_, lw, state, chg) <= 0, arc_step)
    lu, lv_, lw = frame_of(zero, ca, sa, inv_rot)  # sagittal circle in (v, w)
    arc_s = _arc_deg(hip.lesion_set_sdf(lu, lv_, lw, state, chg) <= 0, arc_step)
    cna = arc_c + arc_s
    out["arc_coronal_deg"] = arc_c
    out["arc_sagittal_deg"] = arc_s
    out["cna_deg"] = cna
    out["kerboul_grade"] = 1 if cna < 200 else 2 if cna < 250 else 3 if cna < 300 else 4
    out["koo_kim_index"] = (arc_c / 180.0) * (arc_s / 180.0) * 100.0
    if state.track:
        out["drill_track"] = {
            "entry_ras_mm": world(hip.track_entry).tolist(),
            "end_ras_mm": world(hip.track_end).tolist(),
            "diameter_mm": 2 * hip.track_radius,
        }
    if base_stats is not None:
        v0 = base_stats["baseline"]["A"] + base_stats["baseline"]["B"]
        v0 += base_stats["baseline"]["C1"] + base_stats["baseline"]["C2"]
        v0_ml = v0 * dv
        reg_ml = sum(base_stats["regenerated"][z] for z in jic) * dv
        out["baseline_lesion_volume_ml"] = v0_ml
        out["regeneration_pct"] = 100.0 * (v0_ml - lv) / v0_ml if v0_ml > 0 else None
        out["regenerated_ml"] = reg_ml
        out["new_ml"] = sum(base_stats["new"][z] for z in jic) * dv
        out["persistent_ml"] = sum(base_stats["persistent"][z] for z in jic) * dv
        per_zone = {}
        for z in list(jic) + list(ap):
            b0 = base_stats["baseline"][z] * dv
            rg = base_stats["regenerated"][z] * dv
            per_zone[z] = {
                "baseline_ml": b0,
                "regenerated_ml": rg,
                "new_ml": base_stats["new"][z] * dv,
                "persistent_ml": base_stats["persistent"][z] * dv,
                "share_of_regenerated_pct": 100.0 * rg / reg_ml if reg_ml > 0 else None,
                "zone_regeneration_pct": 100.0 * rg / b0 if b0 > 0 else None,
            }
        out["regeneration_by_zone_baseline_frame"] = per_zone
    return out


def _local_rotation(R: np.ndarray, sg: float) -> np.ndarray:
    """The visit rotation expressed in hip-local axes (x mirrored for a left hip)."""
    m = np.diag([sg, 1.0, 1.0])
    return m @ R @ m


# ----------------------------------------------------------------------------------------------
# scan geometry and rendering
# ----------------------------------------------------------------------------------------------
_PLANE_AXES = {
    # (column, row, slice) directions before obliquity
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
}


def acquisition_grid(acq: Acquisition):
    """Affine and shape in acquisition order (column, row, slice), scanner RAS mm."""
    dirs = np.array(_PLANE_AXES[acq.plane], dtype=np.float64).T  # columns = axis directions
    dirs = rotation_matrix(*acq.oblique_deg) @ dirs
    sp = np.asarray(acq.spacing_mm, dtype=np.float64)
    shape = tuple(int(round(f / s)) for f, s in zip(acq.fov_mm, sp))
    aff = np.eye(4)
    aff[:3, :3] = dirs * sp[None, :]
    centre = np.asarray(acq.centre_ras, dtype=np.float64)
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return aff, shape


def storage_transform(aff: np.ndarray, storage: str):
    """nibabel orientation transform from acquisition order to the requested stored order."""
    return ornt.ornt_transform(ornt.io_orientation(aff), ornt.axcodes2ornt(tuple(storage)))


def _index_to_body(aff: np.ndarray, visit: Visit):
    """Affine from voxel indices to body coordinates: p = R^T (A ijk + a - t)."""
    rt = visit.rotation.T
    return rt @ aff[:3, :3], rt @ (aff[:3, 3] - visit.translation)


def _points(ib, idx: np.ndarray, offsets: np.ndarray):
    """Body coordinates (float32 x, y, z) of voxel index triples plus sub-voxel offsets.

    ``ib`` is :func:`_index_to_body`'s (matrix, vector); indices stay well inside float32's
    exact integer range, and coordinates keep ~1e-5 mm precision.
    """
    m, b = ib
    i = (idx[:, 0:1] + offsets[None, :, 0]).astype(F32).ravel()
    j = (idx[:, 1:2] + offsets[None, :, 1]).astype(F32).ravel()
    k = (idx[:, 2:3] + offsets[None, :, 2]).astype(F32).ravel()
    out = []
    for r in range(3):
        out.append(float(m[r, 0]) * i + float(m[r, 1]) * j + float(m[r, 2]) * k + float(b[r]))
    return out


def _sub_offsets(ss) -> np.ndarray:
    g = [(np.arange(n) + 0.5) / n - 0.5 for n in ss]
    a, b, c = np.meshgrid(*g, indexing="ij")
    return np.stack([a.ravel(), b.ravel(), c.ravel()], axis=1)


def _all_indices(shape) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)


def _chunked(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def render_intensity(subject: Subject, visit: Visit, aff: np.ndarray, shape, ss, ss2=(2, 2, 1), chunk=131072):
    """Noise-free partial-volume image on a grid (acquisition order), float32.

    Two-level adaptive box average: every voxel is sampled at its centre; a voxel whose centre
    lies within its half-diagonal of a tissue boundary is split ``ss`` ways (along the slice for
    thick slices, giving ~cubic sub-boxes); a sub-box whose centre lies within its own
    half-diagonal of a boundary is split again ``ss2`` ways. The distance functions are only
    approximate near wavy or tapered surfaces, so an occasional boundary voxel keeps its centre
    value: a cosmetic miss, since truth labels are computed separately.

    Returns
    -------
    val : voxel mean of the signal
    vtex : voxel mean of signal x texture amplitude (the caller multiplies it by a texture field)
    refined : share of voxels that were split
    """
    idx = _all_indices(shape)
    ib = _index_to_body(aff, visit)
    n = idx.shape[0]
    val = np.empty(n, dtype=F32)
    dist = np.empty(n, dtype=F32)
    vtex = np.empty(n, dtype=F32)
    centre = np.zeros((1, 3))
    for sl in _chunked(n, chunk):
        x, y, z = _points(ib, idx[sl], centre)
        val[sl], dist[sl], ta = subject.render_points(x, y, z, visit)
        vtex[sl] = val[sl] * ta
    sp = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    half_diag = 0.5 * float(np.linalg.norm(sp))
    refine = np.nonzero(dist < half_diag)[0]
    offs = _sub_offsets(ss)
    m = offs.shape[0]
    sub_sp = sp / np.asarray(ss)
    sub_half = 0.5 * float(np.linalg.norm(sub_sp))
    offs2 = _sub_offsets(ss2) / np.asarray(ss)[None, :]
    m2 = offs2.shape[0]
    per = max(1, chunk // m)
    for s in range(0, refine.size, per):
        sel = refine[s : s + per]
        x, y, z = _points(ib, idx[sel], offs)
        v, d, ta = subject.render_points(x, y, z, visit)
        vt = v * ta
        again = np.nonzero(d < sub_half)[0]
        if again.size and m2 > 1:
            # sub-box centres (voxel index units) of the points to split again
            sub_idx = (idx[sel][:, None, :] + offs[None, :, :]).reshape(-1, 3)[again]
            for s2 in range(0, again.size, max(1, chunk // m2)):
                part = again[s2 : s2 + max(1, chunk // m2)]
                xx, yy, zz = _points(ib, sub_idx[s2 : s2 + part.size], offs2)
                v2, _, t2 = subject.render_points(xx, yy, zz, visit)
                v[part] = v2.reshape(part.size, m2).mean(axis=1)
                vt[part] = (v2 * t2).reshape(part.size, m2).mean(axis=1)
        val[sel] = v.reshape(sel.size, m).mean(axis=1)
        vtex[sel] = vt.reshape(sel.size, m).mean(axis=1)
    return val.reshape(shape), vtex.reshape(shape), refine.size / n


def _set_sdf(subject: Subject, side: str, visit: Visit, name: str, x, y, z):
    """One truth set's distance function of a hip at body points (float32).

    Sets: 'femur' (whole proximal femur), 'head' (neck-plane head), 'lesion' (margin region
    within the head minus the drill track), 'hipbone' (acetabulum and pelvic bone). Points more
    than 3 mm across the body midline belong to the other hip (FAR).
    """
    hip = subject.hips[side]
    u = hip.sigma * (x - float(hip.c[0]))
    v = y - float(hip.c[1])
    w = z - float(hip.c[2])
    dent = hip.dent(visit.state(side))
    if name == "femur":
        d = hip.femur_sdf(u, v, w, dent=dent)
    elif name == "hipbone":
        d = hip.hipbone_sdf(u, v, w)
    elif name == "head":
        d = hip.head_sdf(u, v, w, dent=dent)
    elif name == "lesion":
        state = visit.state(side)
        head = hip.head_sdf(u, v, w, dent=dent)
        d = np.full(u.shape, FAR, dtype=u.dtype)
        near = np.nonzero(head < 3.0)[0]
        if near.size:
            chg = subject.change_mm(side, state)
            d[near] = hip.lesion_set_sdf(u[near], v[near], w[near], state, chg, head=head[near])
    else:
        raise ValueError(name)
    other = hip.sigma * (x - subject.body.midline_x) < -3.0
    return np.where(other, FAR, d)


def truth_fractions(subject: Subject, side: str, visit: Visit, aff, shape, ss, ss_bone=None, chunk=262144):
    """Fraction of each voxel inside each truth set (femur, head, lesion, hip bone) of a hip.

    Voxels whose centre is farther from a set's surface than twice the half-diagonal are
    counted as fully in or out (the factor 2 covers distance functions whose slope reaches 2,
    e.g. the lesion's waviness); the others are sub-sampled on an ``ss`` grid (head, lesion)
    or ``ss_bone`` (femur, hip bone: masks with large surfaces, where less precision will do).
    """
    idx = _all_indices(shape)
    ib = _index_to_body(aff, visit)
    n = idx.shape[0]
    hip = subject.hips[side]
    names = ["femur", "head", "hipbone"] + (["lesion"] if hip.lesion is not None else [])
    sp = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    margin = 2.0 * 0.5 * float(np.linalg.norm(sp))
    centre = np.zeros((1, 3))
    frac = {}
    for k in names:
        offs = _sub_offsets(ss if k in ("head", "lesion") or ss_bone is None else ss_bone)
        m = offs.shape[0]
        per = max(1, chunk // m)
        cen = np.empty(n, dtype=F32)
        for sl in _chunked(n, chunk):
            x, y, z = _points(ib, idx[sl], centre)
            cen[sl] = _set_sdf(subject, side, visit, k, x, y, z)
        f = (cen <= 0).astype(F32)
        refine = np.nonzero(np.abs(cen) < margin)[0]
        for s0 in range(0, refine.size, per):
            sel = refine[s0 : s0 + per]
            x, y, z = _points(ib, idx[sel], offs)
            sd = _set_sdf(subject, side, visit, k, x, y, z)
            f[sel] = (sd <= 0).reshape(sel.size, m).mean(axis=1)
        frac[k] = f.reshape(shape)
    return frac


def texture_field(aff: np.ndarray, shape, rng: np.random.Generator, corr_mm: float = 1.2) -> np.ndarray:
    """Unit-variance random texture, Gaussian-correlated over ~corr_mm in space, on the grid.

    Tissue texture (muscle fibres, trabecular mottling) is not truth, so it is made per scan
    from the scan's own noise stream rather than in body coordinates.
    """
    from scipy.ndimage import gaussian_filter

    sp = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    field = rng.normal(size=shape).astype(F32)
    field = gaussian_filter(field, sigma=[corr_mm / s for s in sp], mode="nearest")
    field /= max(float(field.std()), 1e-6)
    return field


def bias_field(aff: np.ndarray, shape, pct: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field 1 + g, |g| <= pct/100, from a random quadratic in RAS mm."""
    idx = _all_indices(shape)
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    c = world.mean(axis=0)
    span = np.ptp(world, axis=0).max() / 2.0
    x = (world - c) / span
    terms = [
        x[:, 0],
        x[:, 1],
        x[:, 2],
        x[:, 0] * x[:, 1],
        x[:, 1] * x[:, 2],
        x[:, 0] * x[:, 2],
        x[:, 0] ** 2,
        x[:, 1] ** 2,
        x[:, 2] ** 2,
    ]
    coef = rng.normal(size=len(terms))
    g = sum(ci * t for ci, t in zip(coef, terms))
    g = g - 0.5 * (g.max() + g.min())
    g = g / np.abs(g).max() * (pct / 100.0)
    return (1.0 + g).reshape(shape).astype(F32)


def _end_slices_ml(frac: np.ndarray, vox_ml: float) -> float:
    """Volume (from fractions) of a set in its first and last slice along the slice axis.

    With thick slices, every partial voxel of an end slice has about the same fraction, so the
    >= 0.5 rule gains or drops that cap as a whole: this is the correlated part of the label
    maps' discretisation error (see tests/test_phantom.py).
    """
    per_slice = frac.sum(axis=(0, 1), dtype=np.float64)
    nz = np.nonzero(per_slice > 0)[0]
    if nz.size == 0:
        return 0.0
    return float(per_slice[nz[0]] + (per_slice[nz[-1]] if nz[-1] != nz[0] else 0.0)) * vox_ml


@dataclass
class RenderedScan:
    """A rendered scan in its stored voxel order, with truth on the same grid.

    Attributes
    ----------
    image : int16 array
    affine : (4, 4) stored voxel index -> scanner RAS mm
    labels : uint8 array (0 background, 1 head outside lesion, 2 lesion), all hips in the FOV
    femur, hipbone : dict side -> uint8 0/1 array
    fractions : dict side -> dict of float32 arrays (acquisition order), for diagnostics
    truth : dict side -> dict (continuous truth + voxel-count volumes)
    refined_fraction : share of voxels re-rendered on the sub-grid
    """

    image: np.ndarray
    affine: np.ndarray
    labels: np.ndarray
    femur: dict
    hipbone: dict
    truth: dict
    acquisition: Acquisition
    refined_fraction: float = 0.0
    fractions: dict = field(default_factory=dict)


def render_scan(
    subject: Subject,
    visit: Visit,
    acq: Acquisition,
    sides,
    seed,
    baseline: Visit | None = None,
    truth_h: float = 0.25,
) -> RenderedScan:
    """Render one scan of a subject at a visit, with truth for the hips in ``sides``.

    Parameters
    ----------
    subject : Subject
    visit : Visit
    acq : Acquisition
    sides : sequence of {'right', 'left'}
        Hips whose truth is produced (those inside the field of view).
    seed : int or sequence of int
        Seed of this scan's bias field and noise (numpy Generator).
    baseline : Visit, optional
        The baseline visit, for regeneration truth.
    truth_h : float
        Grid spacing (mm) of the continuous-truth integration.
    """
    rng = np.random.default_rng(seed)
    aff, shape = acquisition_grid(acq)
    clean, vtex, refined = render_intensity(subject, visit, aff, shape, acq.render_ss, acq.render_ss2)
    clean = clean + vtex * texture_field(aff, shape, rng)
    if any(acq.psf_sigma_vox):
        from scipy.ndimage import gaussian_filter

        clean = gaussian_filter(clean, sigma=acq.psf_sigma_vox, mode="nearest")
    bias = bias_field(aff, shape, acq.bias_pct, rng)
    sigma = acq.noise_pct / 100.0 * subject.contrast.yellow_marrow
    n1 = rng.normal(0.0, sigma, size=shape).astype(F32)
    n2 = rng.normal(0.0, sigma, size=shape).astype(F32)
    img = np.sqrt((clean * bias + n1) ** 2 + n2**2)
    img = np.clip(np.rint(img), 0, 32767).astype(np.int16)

    labels = np.zeros(shape, dtype=np.uint8)
    femur, hipbone, truth, fracs = {}, {}, {}, {}
    vox_ml = abs(np.linalg.det(aff[:3, :3])) / 1000.0
    for side in sides:
        fr = truth_fractions(subject, side, visit, aff, shape, acq.label_ss, acq.label_ss_bone)
        fracs[side] = fr
        head = fr["head"] >= 0.5
        les = fr["lesion"] >= 0.5 if "lesion" in fr else np.zeros(shape, dtype=bool)
        les &= head
        labels[head] = 1
        labels[les] = 2
        femur[side] = (fr["femur"] >= 0.5).astype(np.uint8)
        hipbone[side] = (fr["hipbone"] >= 0.5).astype(np.uint8)
        t = hip_truth(subject, side, visit, baseline=baseline, h=truth_h)
        hv = float(np.count_nonzero(head)) * vox_ml
        lv = float(np.count_nonzero(les)) * vox_ml
        t["voxel_volumes"] = {
            "head_volume_ml": hv,
            "lesion_volume_ml": lv,
            "necrotic_fraction_pct": 100.0 * lv / hv if hv > 0 else None,
            "femur_volume_ml": float(femur[side].sum()) * vox_ml,
            "hipbone_volume_ml": float(hipbone[side].sum()) * vox_ml,
            "head_partial_voxels": int(np.count_nonzero((fr["head"] > 0) & (fr["head"] < 1))),
            "lesion_partial_voxels": int(np.count_nonzero((fr["lesion"] > 0) & (fr["lesion"] < 1)))
            if "lesion" in fr
            else 0,
            "head_fraction_sum_ml": float(fr["head"].sum(dtype=np.float64)) * vox_ml,
            "lesion_fraction_sum_ml": float(fr["lesion"].sum(dtype=np.float64)) * vox_ml if "lesion" in fr else 0.0,
            "head_end_slices_ml": _end_slices_ml(fr["head"], vox_ml),
            "lesion_end_slices_ml": _end_slices_ml(fr["lesion"], vox_ml) if "lesion" in fr else 0.0,
            "voxel_volume_ml": vox_ml,
        }
        truth[side] = t

    tr = storage_transform(aff, acq.storage)
    s_aff = aff @ ornt.inv_ornt_aff(tr, shape)

    def store(a):
        return np.ascontiguousarray(ornt.apply_orientation(a, tr))

    return RenderedScan(
        image=store(img),
        affine=s_aff,
        labels=store(labels),
        femur={k: store(v) for k, v in femur.items()},
        hipbone={k: store(v) for k, v in hipbone.items()},
        truth=truth,
        acquisition=acq,
        refined_fraction=refined,
        fractions=fracs,
    )


# ----------------------------------------------------------------------------------------------
# random subjects (validation sets)
# ----------------------------------------------------------------------------------------------
def random_subject_params(
    rng: np.random.Generator,
    name: str,
    lesion_sides=("right",),
    nf_range=(2.0, 45.0),
    healthy_prob: float = 0.0,
    fovea_prob: float = 0.5,
    red_marrow_head_max: float = 0.0,
) -> SubjectParams:
    """Draw a subject's anatomy and lesions from plausible adult ranges.

    The study hip sits near the scanner isocentre; the other is 2 x (88-98) mm away.
    """
    half = rng.uniform(88.0, 98.0)
    z0 = rng.uniform(-5.0, 5.0)
    y0 = rng.uniform(-5.0, 5.0)
    mid = -half if lesion_sides and lesion_sides[0] == "right" else half
    mid += rng.uniform(-4.0, 4.0)

    def hip(side):
        sg = 1.0 if side == "right" else -1.0
        lesion = None
        if side in lesion_sides and rng.uniform() >= healthy_prob:
            lesion = LesionParams(
                mitchell=str(rng.choice(list(MITCHELL_CLASSES))),
                nf_pct=float(rng.uniform(*nf_range)),
                direction=(float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.05, 0.45)), 0.85),
                shape=(float(rng.uniform(0.65, 0.95)), 1.0, float(rng.uniform(0.75, 1.0))),
                centre_shift=float(rng.uniform(0.0, 0.3)),
                wave_mm=float(rng.uniform(0.8, 1.6)),
                seed=int(rng.integers(1 << 30)),
            )
        return HipParams(
            side=side,
            center=(mid + sg * half + rng.uniform(-1, 1), y0 + rng.uniform(-2, 2), z0 + rng.uniform(-2, 2)),
            radius=float(rng.uniform(22.0, 25.0)),
            waist_ratio=float(rng.uniform(0.64, 0.72)),
            neck_shaft_deg=float(rng.uniform(125.0, 136.0)),
            anteversion_deg=float(rng.uniform(5.0, 20.0)),
            shaft_tilt_deg=float(rng.uniform(4.0, 8.0)),
            offset_mm=float(rng.uniform(38.0, 45.0)),
            shaft_radius=float(rng.uniform(13.0, 15.0)),
            ce_deg=float(rng.uniform(25.0, 40.0)),
            acetabular_version_deg=float(rng.uniform(10.0, 22.0)),
            roof_medial_deg=float(rng.uniform(25.0, 35.0)),
            fovea=bool(rng.uniform() < fovea_prob),
            red_marrow=float(rng.uniform(0.0, 0.6)),
            red_marrow_head=float(rng.uniform(0.0, red_marrow_head_max)),
            effusion_mm=float(rng.uniform(0.3, 2.0)),
            seed=int(rng.integers(1 << 30)),
            lesion=lesion,
        )

    body = BodyParams(
        midline_x=mid,
        pelvis_y=y0,
        pelvis_z=z0,
        half_width_mm=float(half + rng.uniform(70.0, 95.0)),
        half_depth_mm=float(rng.uniform(105.0, 130.0)),
        fat_mm=float(rng.uniform(10.0, 28.0)),
        seed=int(rng.integers(1 << 30)),
    )
    return SubjectParams(name=name, body=body, right=hip("right"), left=hip("left"))
