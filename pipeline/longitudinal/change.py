"""Longitudinal comparison of one hip across visits (docs/method.md section 5).

Pure functions of arrays + geometry: rigid registration of a follow-up scan to the baseline,
resampling of the follow-up image and labels onto the baseline grid, the change map
(persistent / regenerated / new lesion) and the regeneration figures per JIC zone and
antero-posterior region. Loading and writing live in :mod:`pipeline.app.compare`.

Conventions
-----------
* Every coordinate is RAS mm. SimpleITK works in LPS: images are built from the canonical
  :class:`pipeline.io.scan.Scan` arrays with ``direction = LPS @ R`` and ``origin = LPS @ o`` where
  ``LPS = diag(-1, -1, 1)``, and the registration result is converted back at once, so nothing
  outside this module sees LPS.
* The transform is reported as the map from baseline RAS to follow-up RAS,
  ``q_followup = R @ p_baseline + t``. This is also the map that resampling needs: each baseline
  voxel centre is sent into the follow-up scan, where the follow-up is read.

Choices where docs/method.md leaves room
-----------------------------------
* Registration region: the baseline head mask dilated by ``mask_dilation_mm`` (default 12 mm),
  a fixed-image mask. docs/method.md asks for "a few mm" around the proximal femur, but a label map
  holds the head only, and the head is nearly a sphere: it fixes the rotation about its centre
  poorly (on the test phantoms a 5 mm margin left up to 4.5 degrees of error, 8 mm up to 1.8, 12
  mm under 0.5). The 12 mm margin takes in the neck beyond the head's cut plane, the articular
  surfaces and the acetabular rim. The price: where the pelvis turned differently from the femur
  between visits, the rim pulls the rotation a little toward the pelvis. The lesion lies inside
  the region and changes by design; the unchanged marrow, neck and joint dominate the metric.
* The baseline region is resampled onto an isotropic grid (``voxel_mm``, default 1 mm) before the
  multi-resolution pyramid, so that a shrink factor means the same in every direction on thick
  slices. The follow-up is only cropped (ITK interpolates it at the sample points).
* Initialisation: the two fitted head-sphere centres (translation), no rotation, the rotation
  centre at the baseline head centre (so rotation and translation are nearly decoupled).
* Optimizer: regular-step gradient descent with a gentle relaxation (0.9: the step shrinks by a
  tenth at each reversal of direction), then one more full-resolution pass restarted with a fresh
  step. In the shallow valley of the rotation about the neck axis the descent zig-zags, and with
  ITK's usual halving it stalled short of the bottom: the true pose scored better than where it
  stopped, and the error varied with the sampling seed (up to 1.3 degrees on 3.5 mm slices; with
  0.9 and the restart, under 0.65 over six seeds).
* Determinism: random metric sampling with a fixed seed, and one thread for the registration
  (ITK's global default set to 1 for its duration and restored): multi-threaded sums run in a
  varying order and the optimizer path, hence the last digits, would change from run to run.
  Resampling is voxel-wise and uses the default threads.
* Labels move by nearest neighbour, never by linear interpolation.
* Regeneration % R = 100 (V0 - Vt) / V0 uses each visit's own lesion volume (voxel count in its
  own space), as docs/method.md says; the voxel maps (regenerated, new, persistent) and every per-zone
  figure are on the baseline grid with the baseline head frame and weight-bearing span. A zone's
  own regeneration % is net, like R: 100 (V0_zone - Vt_zone) / V0_zone with Vt_zone the follow-up
  lesion mapped into baseline space, i.e. (regenerated - new) / baseline in that zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.errors import InputError
from pipeline.geometry.affine import (
    bounding_box,
    box_start,
    mask_points_mm,
    mm_to_index,
    shifted_affine,
    voxel_spacing,
    voxel_volume_mm3,
)
from pipeline.geometry.frame import HeadFrame
from pipeline.geometry.side import side_of_x
from pipeline.itk_threads import one_itk_thread
from pipeline.measures.collapse import followup_literature_flags
from pipeline.measures.location import AP_REGIONS, JIC_ZONES, ZONE_LABELS, zone_indices
from pipeline.measures.results import FollowupMetrics, HipMetrics

#: RAS <-> LPS (its own inverse).
LPS = np.diag([-1.0, -1.0, 1.0])

#: Values of the change map (baseline grid).
CHANGE_LABELS = {1: "persistent", 2: "regenerated", 3: "new"}

#: Follow-up crop beyond the image of the registration region, mm: room for the residual shift
#: left after centring on the heads (rotation about the head centre keeps the region within its
#: ball) and for the smoothing kernel at the coarse levels.
MOVING_MARGIN_MM = 10.0


# --------------------------------------------------------------------------------------------
# SimpleITK bridge
# --------------------------------------------------------------------------------------------
def _sitk():
    import SimpleITK as sitk  # lazy: `onfh info` and `onfh analyze` do not need it

    return sitk


def to_sitk(data: np.ndarray, affine: np.ndarray, dtype=np.float32):
    """A SimpleITK image (LPS geometry) of an array on a canonical grid.

    Parameters
    ----------
    data : ndarray, shape (I, J, K)
        Voxel values in canonical order (index i, j, k).
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm. Its 3x3 part must be orthogonal up to scaling (no shear).
    dtype : numpy dtype
        Pixel type of the image.
    """
    sitk = _sitk()
    affine = np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(affine)
    direction = LPS @ (affine[:3, :3] / spacing)
    # sitk's array view is (k, j, i): the first index of a numpy array is ITK's slowest axis
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=dtype).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(x) for x in LPS @ affine[:3, 3]])
    image.SetDirection([float(x) for x in direction.ravel()])
    return image


def from_sitk(image) -> np.ndarray:
    """The voxels of a SimpleITK image as an (I, J, K) array (inverse of :func:`to_sitk`)."""
    return np.ascontiguousarray(_sitk().GetArrayFromImage(image).transpose(2, 1, 0))


def _crop(data: np.ndarray, affine: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Sub-array [lo, hi) and its affine (the origin moves to voxel ``lo``)."""
    lo = np.clip(np.asarray(lo, dtype=int), 0, data.shape)
    hi = np.clip(np.asarray(hi, dtype=int), lo, data.shape)
    return data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], shifted_affine(affine, lo)


def _index_box(affine: np.ndarray, shape, centre_mm: np.ndarray, half_mm: float):
    """Voxel index range [lo, hi) of a grid covering the cube centre ± half_mm (RAS)."""
    corners = np.array(list(np.ndindex(2, 2, 2)), dtype=np.float64) * 2 - 1
    pts = np.asarray(centre_mm, dtype=np.float64) + half_mm * corners
    ijk = mm_to_index(affine, pts)
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 2, shape)
    return lo, hi


# --------------------------------------------------------------------------------------------
# rigid transform in RAS
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RigidTransform:
    """Rigid map from baseline RAS to follow-up RAS: ``q = rotation @ p + translation``.

    Attributes
    ----------
    rotation : ndarray, shape (3, 3)
        Proper rotation matrix (RAS).
    translation : ndarray, shape (3,)
        mm (RAS).
    """

    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "translation", np.asarray(self.translation, dtype=np.float64).reshape(3))

    @classmethod
    def identity(cls) -> RigidTransform:
        return cls(np.eye(3), np.zeros(3))

    def apply(self, points_mm: np.ndarray) -> np.ndarray:
        """Follow-up RAS of baseline RAS points (..., 3), mm."""
        return np.asarray(points_mm, dtype=np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> RigidTransform:
        return RigidTransform(self.rotation.T, -self.rotation.T @ self.translation)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix (RAS mm)."""
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = self.rotation, self.translation
        return out

    @property
    def rotation_deg(self) -> float:
        """Rotation angle about the rotation axis, degrees (0..180)."""
        cos = np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0)
        return float(np.degrees(np.arccos(cos)))

    @property
    def rotation_axis(self) -> np.ndarray | None:
        """Unit rotation axis (RAS), None for a negligible rotation."""
        r = self.rotation
        axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
        norm = np.linalg.norm(axis)
        return None if norm < 1e-9 else axis / norm

    def displacement_at(self, point_mm: np.ndarray) -> np.ndarray:
        """Where a baseline point moves, q - p (mm): at the head centre this is the motion that
        matters, free of the lever arm from the scanner origin that ``translation`` carries."""
        p = np.asarray(point_mm, dtype=np.float64)
        return self.apply(p) - p

    def to_sitk(self):
        """The same map in LPS as a SimpleITK AffineTransform (what sitk.Resample expects)."""
        sitk = _sitk()
        tx = sitk.AffineTransform(3)
        tx.SetMatrix([float(x) for x in (LPS @ self.rotation @ LPS).ravel()])
        tx.SetTranslation([float(x) for x in LPS @ self.translation])
        return tx

    @classmethod
    def from_sitk(cls, tx) -> RigidTransform:
        """From a SimpleITK matrix-offset transform (LPS, with a centre) to RAS."""
        sitk = _sitk()
        if tx.GetName() == "CompositeTransform":
            tx = sitk.CompositeTransform(tx).GetNthTransform(0)
        matrix = np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(3, 3)
        centre = np.asarray(tx.GetCenter(), dtype=np.float64)
        offset = np.asarray(tx.GetTranslation(), dtype=np.float64) + centre - matrix @ centre
        return cls(LPS @ matrix @ LPS, LPS @ offset)

    def as_dict(self) -> dict:
        axis = self.rotation_axis
        return {
            "convention": "q_followup = R @ p_baseline + t (RAS mm)",
            "rotation_matrix": self.rotation.tolist(),
            "translation_mm": self.translation.tolist(),
            "matrix_4x4": self.matrix.tolist(),
            "rotation_deg": self.rotation_deg,
            "rotation_axis_ras": None if axis is None else axis.tolist(),
        }


# --------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------
@dataclass
class Registration:
    """Result of :func:`register_rigid`.

    Attributes
    ----------
    transform : RigidTransform
        Baseline RAS -> follow-up RAS.
    initial : RigidTransform
        The initialisation (head-centre translation).
    metric_value : float
        Final Mattes mutual information (negative; lower is better), at the finest level.
    iterations : list of int
        Optimizer iterations per level, coarse to fine.
    stop_condition : str
        The optimizer's reason to stop at the finest level.
    method : dict
        Everything that defines the registration (for the output).
    """

    transform: RigidTransform
    initial: RigidTransform
    metric_value: float
    iterations: list
    stop_condition: str
    method: dict = field(default_factory=dict)


def registration_region(head: np.ndarray, affine: np.ndarray, dilation_mm: float) -> np.ndarray:
    """The head mask dilated by ``dilation_mm`` (Euclidean, in mm through the voxel spacing)."""
    head = np.asarray(head, dtype=bool)
    if dilation_mm <= 0:
        return head.copy()
    spacing = voxel_spacing(affine)
    pad = int(np.ceil(dilation_mm / spacing.min())) + 1
    sl = bounding_box(head, margin=pad)
    if sl is None:
        return head.copy()
    out = np.zeros_like(head)
    dist = ndimage.distance_transform_edt(~head[sl], sampling=spacing)
    out[sl] = dist <= dilation_mm
    return out


def register_rigid(
    fixed_data: np.ndarray,
    fixed_affine: np.ndarray,
    fixed_head: np.ndarray,
    fixed_center_mm: np.ndarray,
    moving_data: np.ndarray,
    moving_affine: np.ndarray,
    moving_center_mm: np.ndarray,
    settings,
) -> Registration:
    """Rigid (6 DOF) registration of a follow-up (moving) to the baseline (fixed).

    Mattes mutual information over the baseline head dilated by ``settings.mask_dilation_mm``
    (fixed-image mask), versor rigid transform about the baseline head centre, initialised by the
    head-centre difference, regular-step gradient descent with physical-shift scales, multi-resolution
    (``shrink_factors``, ``smoothing_sigmas_mm``), random sampling with a fixed seed, one thread.

    Parameters
    ----------
    fixed_data, moving_data : ndarray, shape (I, J, K)
        Baseline and follow-up intensities, each on its own canonical grid.
    fixed_affine, moving_affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    fixed_head : ndarray of bool
        Baseline head mask (lesion included) on the baseline grid.
    fixed_center_mm, moving_center_mm : ndarray, shape (3,)
        Fitted head-sphere centres, RAS mm, of each visit in its own space.
    settings : pipeline.config.LongitudinalSettings

    Returns
    -------
    Registration
    """
    sitk = _sitk()
    fixed_affine = np.asarray(fixed_affine, dtype=np.float64)
    moving_affine = np.asarray(moving_affine, dtype=np.float64)
    c0 = np.asarray(fixed_center_mm, dtype=np.float64)
    c1 = np.asarray(moving_center_mm, dtype=np.float64)
    head = np.asarray(fixed_head, dtype=bool)
    if not head.any():
        raise InputError("the baseline head mask is empty: nothing to register")

    # baseline region on an isotropic grid with the baseline's axis directions
    dilation = float(settings.mask_dilation_mm)
    voxel = float(settings.voxel_mm)
    fixed_img, region, iso_aff = _fixed_region(fixed_data, fixed_affine, head, dilation, voxel)
    mask_img = to_sitk(region, iso_aff, np.uint8)
    moving_img = _moving_crop(moving_data, moving_affine, region, iso_aff, c0, c1)

    initial = RigidTransform(np.eye(3), c1 - c0)
    tx = sitk.VersorRigid3DTransform()
    tx.SetCenter([float(x) for x in LPS @ c0])
    tx.SetTranslation([float(x) for x in LPS @ (c1 - c0)])

    reg, iterations = _registration_method(tx, mask_img, settings)
    try:
        with one_itk_thread():
            _execute(reg, tx, fixed_img, moving_img, settings)
    except RuntimeError as exc:
        # ITK says why in its last line, e.g. too few samples inside the moving image
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"registration of the follow-up to the baseline failed: {reason}") from None

    return Registration(
        transform=RigidTransform.from_sitk(tx),
        initial=initial,
        metric_value=float(reg.GetMetricValue()),
        iterations=iterations,
        stop_condition=reg.GetOptimizerStopConditionDescription(),
        method=_method_record(sitk, settings, dilation, voxel),
    )


def _fixed_region(fixed_data: np.ndarray, fixed_affine: np.ndarray, head: np.ndarray, dilation: float,
                  voxel: float):
    """The baseline image about the head, resampled to isotropic voxels, and the registration region.

    The isotropic grid keeps the baseline's axis directions, so a shrink factor of the pyramid means
    the same in every direction on thick slices.

    Parameters
    ----------
    fixed_data : ndarray, shape (I, J, K)
        Baseline intensities on its canonical grid.
    fixed_affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    head : ndarray of bool
        Baseline head mask (not empty).
    dilation : float
        The region is the head dilated by this, mm (``mask_dilation_mm``).
    voxel : float
        Isotropic voxel, mm (``voxel_mm``).

    Returns
    -------
    fixed_img : SimpleITK.Image
        The resampled baseline crop.
    region : ndarray of bool
        The registration region on the isotropic grid.
    iso_aff : ndarray, shape (4, 4)
        The isotropic grid's affine.

    Raises
    ------
    InputError
        A head smaller than one registration voxel.
    """
    sitk = _sitk()
    margin = dilation + 2.0 * float(voxel_spacing(fixed_affine).max()) + 2.0
    box = bounding_box(head, voxel_spacing(fixed_affine), margin_mm=margin)
    crop, crop_aff = np.asarray(fixed_data)[box], shifted_affine(fixed_affine, box_start(box))
    head_crop = head[box]
    direction = crop_aff[:3, :3] / voxel_spacing(crop_aff)
    extent = (np.array(crop.shape) - 1) * voxel_spacing(crop_aff)
    iso_shape = tuple(int(n) for n in np.floor(extent / voxel).astype(int) + 1)
    iso_aff = np.eye(4)
    iso_aff[:3, :3] = direction * voxel
    iso_aff[:3, 3] = crop_aff[:3, 3]
    fixed_img = _resample_grid(to_sitk(crop, crop_aff), iso_shape, iso_aff, None, sitk.sitkLinear, 0.0)
    head_iso = from_sitk(_resample_grid(to_sitk(head_crop, crop_aff, np.uint8), iso_shape, iso_aff, None,
                                        sitk.sitkNearestNeighbor, 0)) > 0
    if not head_iso.any():
        raise InputError("the baseline head mask is smaller than one registration voxel")
    region = registration_region(head_iso, iso_aff, dilation)
    return fixed_img, region, iso_aff


def _moving_crop(moving_data: np.ndarray, moving_affine: np.ndarray, region: np.ndarray, iso_aff: np.ndarray,
                 c0: np.ndarray, c1: np.ndarray):
    """The follow-up image cropped about its head, as a SimpleITK image.

    Only region points are sampled, so the crop need only hold their image: a ball about the
    follow-up head centre as large as the region seen from the baseline head centre, plus
    ``MOVING_MARGIN_MM``.

    Parameters
    ----------
    moving_data : ndarray, shape (I, J, K)
        Follow-up intensities on its canonical grid.
    moving_affine : ndarray, shape (4, 4)
    region : ndarray of bool
        The registration region on the grid of ``iso_aff`` (:func:`_fixed_region`).
    iso_aff : ndarray, shape (4, 4)
    c0, c1 : ndarray, shape (3,)
        Baseline and follow-up head centres, RAS mm.

    Returns
    -------
    SimpleITK.Image

    Raises
    ------
    InputError
        A follow-up head at the edge of its scan.
    """
    region_pts = mask_points_mm(region, iso_aff)
    half = float(np.linalg.norm(region_pts - c0, axis=1).max()) + MOVING_MARGIN_MM
    lo, hi = _index_box(moving_affine, np.asarray(moving_data).shape, c1, half)
    moving_crop, moving_crop_aff = _crop(np.asarray(moving_data), moving_affine, lo, hi)
    if min(moving_crop.shape) < 2:
        raise InputError("the follow-up head lies at the edge of its scan: nothing to register")
    return to_sitk(moving_crop, moving_crop_aff)


def _registration_method(tx, mask_img, settings):
    """The SimpleITK registration: metric, sampling, mask, optimizer and pyramid, with an iteration count.

    Parameters
    ----------
    tx : SimpleITK.VersorRigid3DTransform
        The initial transform, optimised in place.
    mask_img : SimpleITK.Image
        The fixed-image mask (the registration region).
    settings : pipeline.config.LongitudinalSettings

    Returns
    -------
    reg : SimpleITK.ImageRegistrationMethod
    iterations : list of int
        Filled while it runs: optimizer iterations per level, coarse to fine.
    """
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(settings.histogram_bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(settings.sampling_percentage), int(settings.seed))
    reg.SetMetricFixedMask(mask_img)
    reg.SetInterpolator(sitk.sitkLinear)
    _set_optimizer(reg, settings.learning_rate_mm, settings)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([int(s) for s in settings.shrink_factors])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    iterations: list[int] = []
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, lambda: iterations.append(0))
    reg.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(-1, iterations[-1] + 1))
    return reg, iterations


def _method_record(sitk, settings, dilation: float, voxel: float) -> dict:
    """Everything that defines the registration, for ``registration.method`` of the output.

    Parameters
    ----------
    sitk : module
        SimpleITK (its version is recorded).
    settings : pipeline.config.LongitudinalSettings
    dilation, voxel : float
        Region dilation and isotropic voxel used, mm.

    Returns
    -------
    dict
    """
    return {
        "software": f"SimpleITK {sitk.Version.VersionString()}",
        "transform": "VersorRigid3DTransform (6 DOF) about the baseline head centre",
        "initialisation": "head-sphere centres (translation), no rotation",
        "metric": f"Mattes mutual information, {int(settings.histogram_bins)} bins",
        "sampling": f"random {float(settings.sampling_percentage):g} of masked voxels, seed {int(settings.seed)}",
        "fixed_mask": f"baseline head dilated by {dilation:g} mm",
        "fixed_voxel_mm": voxel,
        "optimizer": (f"regular step gradient descent (relaxation {float(settings.relaxation_factor):g}), "
                      "scales from physical shift"),
        "refine_passes": int(settings.refine_passes),
        "shrink_factors": [int(s) for s in settings.shrink_factors],
        "smoothing_sigmas_mm": [float(s) for s in settings.smoothing_sigmas_mm],
        "threads": 1,
    }


def _execute(reg, tx, fixed_img, moving_img, settings) -> None:
    """The pyramid, then the refinement passes (each restarts from the current transform)."""
    reg.Execute(fixed_img, moving_img)
    for k in range(int(settings.refine_passes)):
        # Regular-step descent shrinks its step at every reversal of direction; in the narrow
        # valley that a nearly spherical head makes (rotation about the neck axis is weakly
        # constrained) it can stop short of the bottom. A full-resolution pass restarted with a
        # fresh step and a fresh sample goes on where the first one stalled.
        _set_optimizer(reg, settings.refine_learning_rate_mm, settings)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([1])
        reg.SetSmoothingSigmasPerLevel([0.0])
        reg.SetMetricSamplingPercentage(float(settings.sampling_percentage), int(settings.seed) + k + 1)
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(fixed_img, moving_img)


def _set_optimizer(reg, learning_rate_mm: float, settings) -> None:
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(learning_rate_mm),
        minStep=float(settings.min_step_mm),
        numberOfIterations=int(settings.max_iterations),
        relaxationFactor=float(settings.relaxation_factor),
        gradientMagnitudeTolerance=1e-8,
    )


def _resample_grid(image, shape, affine, transform, interpolator, default):
    """Resample a SimpleITK image onto the canonical grid (shape, affine); ``transform`` maps
    output-grid points (LPS) to ``image`` points, None for identity."""
    sitk = _sitk()
    affine = np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(affine)
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in shape])
    f.SetOutputSpacing([float(s) for s in spacing])
    f.SetOutputOrigin([float(x) for x in LPS @ affine[:3, 3]])
    f.SetOutputDirection([float(x) for x in (LPS @ (affine[:3, :3] / spacing)).ravel()])
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(image.GetPixelID())
    if transform is not None:
        f.SetTransform(transform)
    return f.Execute(image)


def resample_to_baseline(
    data: np.ndarray,
    affine: np.ndarray,
    ref_shape,
    ref_affine: np.ndarray,
    transform: RigidTransform,
    labels: bool = False,
) -> np.ndarray:
    """A follow-up array moved onto the baseline grid.

    Parameters
    ----------
    data : ndarray, shape (I, J, K)
        Follow-up intensities or labels on the follow-up's canonical grid.
    affine : ndarray, shape (4, 4)
        Follow-up voxel index -> RAS mm.
    ref_shape : tuple of 3 int
    ref_affine : ndarray, shape (4, 4)
        The baseline grid.
    transform : RigidTransform
        Baseline RAS -> follow-up RAS.
    labels : bool
        True: nearest neighbour, integer labels kept (uint8 out); False: trilinear (float32 out).
        Outside the follow-up's field of view the value is 0.

    Returns
    -------
    ndarray on the baseline grid.
    """
    sitk = _sitk()
    if labels:
        arr = np.asarray(data)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            raise ValueError("label values must fit in 0..255")
        image = to_sitk(arr, affine, np.uint8)
        out = _resample_grid(image, ref_shape, ref_affine, transform.to_sitk(), sitk.sitkNearestNeighbor, 0)
    else:
        image = to_sitk(data, affine, np.float32)
        out = _resample_grid(image, ref_shape, ref_affine, transform.to_sitk(), sitk.sitkLinear, 0.0)
    return from_sitk(out)


# --------------------------------------------------------------------------------------------
# change figures
# --------------------------------------------------------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice overlap 2|A ∩ B| / (|A| + |B|); None when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def regeneration_pct(baseline_ml: float, followup_ml: float) -> float | None:
    """R = 100 (V0 - Vt) / V0, %; negative means growth; None when V0 is 0."""
    if baseline_ml is None or followup_ml is None or baseline_ml <= 0:
        return None
    return 100.0 * (baseline_ml - followup_ml) / baseline_ml


def change_map(baseline_lesion: np.ndarray, followup_lesion: np.ndarray) -> np.ndarray:
    """1 persistent (L0 ∧ Lt), 2 regenerated (L0 ∧ ¬Lt), 3 new (Lt ∧ ¬L0), 0 elsewhere; uint8."""
    l0 = np.asarray(baseline_lesion, dtype=bool)
    lt = np.asarray(followup_lesion, dtype=bool)
    out = np.zeros(l0.shape, dtype=np.uint8)
    out[l0 & lt] = 1
    out[l0 & ~lt] = 2
    out[lt & ~l0] = 3
    return out


def zone_changes(
    baseline_lesion: np.ndarray,
    followup_lesion: np.ndarray,
    affine: np.ndarray,
    frame: HeadFrame,
    span: dict,
) -> dict:
    """Per-zone lesion change on the baseline grid (JIC zones, AP regions, 12 combinations).

    Zones are those of the baseline head frame and weight-bearing span, applied to voxel centres
    (the slabs extend beyond the head, so a new lesion voxel outside the baseline head still has
    a zone).

    Parameters
    ----------
    baseline_lesion, followup_lesion : ndarray of bool, baseline grid
        L0, and Lt mapped into baseline space.
    affine : ndarray, shape (4, 4)
        Baseline voxel index -> RAS mm.
    frame : HeadFrame
        Baseline head frame.
    span : dict
        Baseline weight-bearing span (u_med_mm, u_lat_mm).

    Returns
    -------
    dict
        zone -> {baseline_ml, followup_ml, regenerated_ml, new_ml, persistent_ml, share_pct,
        regeneration_pct, regenerated_fraction_pct}, volumes in mL. ``share_pct`` is the zone's
        share of all regenerated volume (null when nothing regenerated); ``regeneration_pct`` the
        net change 100 (V0 - Vt) / V0 in the zone (null when the zone had no baseline lesion);
        ``regenerated_fraction_pct`` = 100 regenerated / V0 in the zone (gross, ignores new lesion).
    """
    l0 = np.asarray(baseline_lesion, dtype=bool)
    lt = np.asarray(followup_lesion, dtype=bool)
    any_ = l0 | lt
    pts = mask_points_mm(any_, affine)
    jic, ap = zone_indices(frame.uvw(pts), frame, span)
    combo = 3 * jic + ap
    a = l0[any_]
    b = lt[any_]
    # np.argwhere and boolean indexing both run in C order, so the rows match
    kinds = {"baseline": a, "followup": b, "regenerated": a & ~b, "new": b & ~a, "persistent": a & b}
    ml = voxel_volume_mm3(affine) / 1000.0
    counts = {k: np.bincount(combo[v], minlength=12).reshape(4, 3) * ml for k, v in kinds.items()}

    def entry(select) -> dict:
        vol = {k: float(select(c)) for k, c in counts.items()}
        return {f"{k}_ml": v for k, v in vol.items()}

    out: dict = {}
    for j, zone in enumerate(JIC_ZONES):
        out[zone] = entry(lambda c, j=j: c[j].sum())
    for k, region in enumerate(AP_REGIONS):
        out[region] = entry(lambda c, k=k: c[:, k].sum())
    for j in range(4):
        for k in range(3):
            out[ZONE_LABELS[1 + 3 * j + k]] = entry(lambda c, j=j, k=k: c[j, k])
    total_regenerated = float(counts["regenerated"].sum())
    for z in out.values():
        z["share_pct"] = 100.0 * z["regenerated_ml"] / total_regenerated if total_regenerated > 0 else None
        z["regeneration_pct"] = regeneration_pct(z["baseline_ml"], z["followup_ml"])
        z["regenerated_fraction_pct"] = (100.0 * z["regenerated_ml"] / z["baseline_ml"]
                                         if z["baseline_ml"] > 0 else None)
    return out


def head_shape_change(baseline: HipMetrics, followup: HipMetrics) -> dict:
    """Change of head volume and sphericity between visits: a hint of collapse.

    A collapsing head loses volume under the weight-bearing dome and departs from its sphere:
    its sphere-fit RMS residual rises and the head fills less of its fitted sphere. The fill is
    head volume / volume of the fitted sphere, %; it is below 100 for a healthy head too (the
    neck-plane cut removes a cap), so only its change between visits means something.

    Returns
    -------
    dict
        head_volume_change_ml, head_volume_change_pct, head_radius_change_mm,
        sphere_fit_rms_change_mm, sphere_fill_pct (baseline, followup), sphere_fill_change_pct
        (percentage points). Values that cannot be computed are None.
    """
    def fill(m: HipMetrics):
        r, v = m.head_radius_mm, m.head_volume_ml
        if r is None or v is None or r <= 0:
            return None
        return 100.0 * v / (4.0 / 3.0 * np.pi * r**3 / 1000.0)

    def diff(a, b):
        return None if a is None or b is None else float(b - a)

    v0 = baseline.head_volume_ml
    dv = diff(v0, followup.head_volume_ml)
    f0, f1 = fill(baseline), fill(followup)
    return {
        "head_volume_change_ml": dv,
        "head_volume_change_pct": None if dv is None or not v0 else 100.0 * dv / v0,
        "head_radius_change_mm": diff(baseline.head_radius_mm, followup.head_radius_mm),
        "sphere_fit_rms_change_mm": diff(baseline.sphere_fit_rms_mm, followup.sphere_fit_rms_mm),
        "sphere_fill_pct": {"baseline": f0, "followup": f1},
        "sphere_fill_change_pct": None if f0 is None or f1 is None else f1 - f0,
    }


def depression_change_mm(baseline: HipMetrics, followup: HipMetrics) -> float | None:
    """Follow-up minus baseline head depression (docs/method.md section 6), each measured in its own
    space against its own sphere, mm; None when either is unknown. Within about twice the larger
    detection limit of the two visits a change is not told from the grid's effect."""
    a, b = baseline.head_depression_mm, followup.head_depression_mm
    return None if a is None or b is None else float(b - a)


def new_collapse(baseline: HipMetrics, followup: HipMetrics) -> bool | None:
    """True when the head had no collapse at baseline ("none") and has one at the follow-up (IIIA
    or IIIB): the ARCO 2019 stage III the follow-up reached; None when either call is unknown."""
    a, b = baseline.arco2019_collapse, followup.arco2019_collapse
    if a is None or b is None:
        return None
    return a == "none" and b in ("IIIA", "IIIB")


def new_collapse_warnings(baseline: HipMetrics, followup: HipMetrics) -> list[str]:
    """A new collapse whose baseline "none" could not rule collapse out at the dome's top
    (:meth:`HipMetrics.collapse_caveat`) may have been there already: said, not hidden."""
    caveat = baseline.collapse_caveat()
    if not (new_collapse(baseline, followup) and caveat):
        return []
    return [f"new collapse at follow-up, but the baseline's stage 'none' leaves the top of the dome open ({caveat}): "
            "check the baseline dome on the images"]


# --------------------------------------------------------------------------------------------
# checks that the two visits show the same hip
# --------------------------------------------------------------------------------------------
def check_same_hip(baseline: HipMetrics, followup: HipMetrics, side: str, settings) -> list[str]:
    """Refuse visits that cannot be the same hip; return warnings for doubtful ones.

    * The visits' anatomy (``side_check``, :mod:`pipeline.geometry.side`) shows hips of different sides.
    * Head centres beyond ±``side_offset_mm`` of x = 0 on opposite sides
      (:func:`pipeline.geometry.side.side_of_x`): the scanner's x = 0 lies near the patient's
      midline (the table centres the patient), and a hip lies 80-100 mm from it, so the two scans
      (or their labels) show different hips. Refused: a rigid registration
      of a left hip to a right one still returns a transform and numbers, all of them wrong.
    * Head radii differing by more than ``max_head_radius_difference_mm``: an adult head does not
      change size; collapse flattens the dome by a few mm at most, which a robust sphere fit
      mostly ignores. Another patient or a mislabelled head is far likelier. Refused, for the same
      reason; a user who knows better raises the threshold in the config.
    * Both centres on the side opposite to ``side``: warned (the scanner origin may not be the
      midline, e.g. after a re-centred field of view).

    Raises
    ------
    InputError
    """
    warnings: list[str] = []
    found0 = (baseline.side_check or {}).get("found")
    found1 = (followup.side_check or {}).get("found")
    if found0 and found1 and found0 != found1:
        # even under --trust-side: a regeneration figure across two different hips is meaningless
        raise InputError(f"side mismatch: the baseline's anatomy shows a {found0} hip and the follow-up's a "
                         f"{found1} hip")
    c0, c1 = baseline.head_center_ras_mm, followup.head_center_ras_mm
    r0, r1 = baseline.head_radius_mm, followup.head_radius_mm
    if c0 is None or c1 is None or r0 is None or r1 is None:
        raise InputError("a head-sphere fit is missing: cannot compare the visits")
    x0, x1 = float(c0[0]), float(c1[0])
    side0 = side_of_x(x0, margin_mm=float(settings.side_offset_mm))
    side1 = side_of_x(x1, margin_mm=float(settings.side_offset_mm))
    if side0 and side1 and side0 != side1:
        raise InputError(
            f"side mismatch: the baseline head centre lies at x = {x0:.1f} mm and the follow-up's at "
            f"x = {x1:.1f} mm, on opposite sides of the body (the other hip, or labels of the other hip?)"
        )
    if side0 and side1 and side0 != side:
        warnings.append(
            f"both head centres lie at x {'>' if side0 == 'right' else '<'} 0 ({x0:.1f}, {x1:.1f} mm), on the "
            f"patient's {side0}, though --side is {side}: check the side"
        )
    dr = abs(float(r1) - float(r0))
    if dr > settings.max_head_radius_difference_mm:
        raise InputError(
            f"head radius differs by {dr:.1f} mm between visits ({r0:.1f} vs {r1:.1f} mm), more than "
            f"{settings.max_head_radius_difference_mm:g} mm: another patient or another hip? "
            "(longitudinal.max_head_radius_difference_mm)"
        )
    return warnings


# --------------------------------------------------------------------------------------------
# one follow-up against the baseline
# --------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """One follow-up against the baseline, on the baseline grid.

    Attributes
    ----------
    registration : Registration
    image_in_baseline : ndarray of float32
        Follow-up intensities on the baseline grid (trilinear).
    labels_in_baseline : ndarray of uint8
        Follow-up labels on the baseline grid (0, 1 head outside the lesion, 2 lesion; nearest
        neighbour).
    change : ndarray of uint8
        Change map (:data:`CHANGE_LABELS`).
    result : FollowupMetrics
        The figures of this follow-up (see :func:`compare_visits`).
    """

    registration: Registration
    image_in_baseline: np.ndarray
    labels_in_baseline: np.ndarray
    change: np.ndarray
    result: FollowupMetrics

    @property
    def figures(self) -> dict:
        """The figures as a ``followups`` entry dict (unrounded), for callers of the earlier
        interface; code reads :attr:`result`."""
        return self.result.as_dict()


def compare_visits(baseline, followup, settings) -> Comparison:
    """Register a follow-up to the baseline and measure what changed (docs/method.md section 5).

    Parameters
    ----------
    baseline, followup : pipeline.measures.hip.Analysis
        Each visit measured in its own space (:func:`pipeline.measures.hip.measure_hip`), with its head
        frame; the baseline's weight-bearing span defines the zones.
    settings : pipeline.config.Settings

    Returns
    -------
    Comparison
        ``result`` (:class:`pipeline.measures.results.FollowupMetrics`, assembled here and nowhere
        else): the follow-up's metrics, regeneration_pct, regeneration_pct_isotropic,
        baseline_lesion_ml, followup_lesion_ml, regenerated_ml, new_ml, persistent_ml,
        followup_lesion_in_baseline_ml, zones, head_change, registration, warnings.

    Raises
    ------
    InputError
        Visits that cannot show the same hip (:func:`check_same_hip`), DICOM visits whose Patient
        IDs differ (compared as one-way keys in memory), or a failed registration.
    """
    ls = settings.longitudinal
    m0, m1 = baseline.result, followup.result
    if baseline.frame is None or followup.frame is None:
        raise InputError("a visit has no head frame: cannot compare")
    k0, k1 = baseline.scan.meta.get("patient_key"), followup.scan.meta.get("patient_key")
    if k0 and k1 and k0 != k1:
        raise InputError("the baseline and follow-up DICOM series carry different Patient IDs: visits of two "
                         "patients are not compared")
    warnings = check_same_hip(m0, m1, m0.side, ls)

    reg = register_rigid(
        baseline.scan.data, baseline.scan.affine, baseline.head, baseline.frame.center,
        followup.scan.data, followup.scan.affine, followup.frame.center, ls,
    )
    tx = reg.transform
    shape, aff = baseline.scan.shape, baseline.scan.affine
    labels_t = np.zeros(followup.scan.shape, dtype=np.uint8)
    labels_t[followup.head] = 1
    labels_t[followup.lesion] = 2
    labels_in_base = resample_to_baseline(labels_t, followup.scan.affine, shape, aff, tx, labels=True)
    image_in_base = resample_to_baseline(followup.scan.data, followup.scan.affine, shape, aff, tx)
    head_t = labels_in_base > 0
    lesion_t = labels_in_base == 2
    lesion_0 = baseline.lesion & baseline.head

    head_dice = dice(baseline.head, head_t)
    if head_dice is None or head_dice < ls.min_head_dice:
        warnings.append(
            f"poor alignment: head-mask Dice after registration {0.0 if head_dice is None else head_dice:.3f} "
            f"< {ls.min_head_dice:g}; the change map and zone figures are unreliable"
        )
    if tx.rotation_deg > ls.max_rotation_deg:
        warnings.append(
            f"registration rotated the follow-up by {tx.rotation_deg:.1f} degrees (> {ls.max_rotation_deg:g}): "
            "check that both scans show the same hip"
        )
    fov_lost = _outside_fov(baseline.head, aff, followup.scan.shape, followup.scan.affine, tx)
    if fov_lost:
        warnings.append(f"{fov_lost} baseline head voxels fall outside the follow-up's field of view")

    warnings += new_collapse_warnings(m0, m1)
    change = change_map(lesion_0, lesion_t)
    ml = voxel_volume_mm3(aff) / 1000.0
    v0, vt = m0.lesion_volume_ml, m1.lesion_volume_ml
    regen = regeneration_pct(v0, vt)
    if regen is None:
        warnings.append("empty baseline lesion: regeneration % is undefined (null); new lesion is still mapped")
    iso0, iso1 = m0.reconstruction or {}, m1.reconstruction or {}
    zones = zone_changes(lesion_0, lesion_t, aff, baseline.frame, m0.weight_bearing)
    result = FollowupMetrics(
        followup=m1,
        regeneration_pct=regen,
        regeneration_pct_isotropic=regeneration_pct(iso0.get("lesion_volume_ml"), iso1.get("lesion_volume_ml")),
        baseline_lesion_ml=v0,
        followup_lesion_ml=vt,
        regenerated_ml=int((change == 2).sum()) * ml,
        new_ml=int((change == 3).sum()) * ml,
        persistent_ml=int((change == 1).sum()) * ml,
        followup_lesion_in_baseline_ml=int(lesion_t.sum()) * ml,
        zones=zones,
        head_change=head_shape_change(m0, m1),
        head_depression_change_mm=depression_change_mm(m0, m1),
        new_collapse=new_collapse(m0, m1),
        literature_flags=followup_literature_flags(m1.necrotic_fraction_pct, settings),
        registration={
            "method": reg.method,
            "transform": tx.as_dict(),
            "rotation_deg": tx.rotation_deg,
            "translation_mm": tx.translation.tolist(),
            "translation_norm_mm": float(np.linalg.norm(tx.translation)),
            "head_centre_displacement_mm": tx.displacement_at(baseline.frame.center).tolist(),
            "initial_translation_ras_mm": reg.initial.translation.tolist(),
            "head_dice": head_dice,
            "metric_value": reg.metric_value,
            "iterations": int(sum(reg.iterations)),
            "iterations_per_level": list(reg.iterations),
            "stop_condition": reg.stop_condition,
        },
        warnings=warnings,
    )
    return Comparison(reg, image_in_base.astype(np.float32, copy=False), labels_in_base, change, result)


def _outside_fov(mask: np.ndarray, affine: np.ndarray, moving_shape, moving_affine, tx: RigidTransform) -> int:
    """How many voxels of a baseline mask map outside the follow-up grid under ``tx``."""
    ijk = np.rint(mm_to_index(moving_affine, tx.apply(mask_points_mm(mask, affine))))
    inside = np.all((ijk >= 0) & (ijk < np.asarray(moving_shape)), axis=1)
    return int((~inside).sum())
