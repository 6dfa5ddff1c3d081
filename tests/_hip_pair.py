"""A continuous MRI-like hip model rendered on any grid in any pose: known motion, known volumes.

Body coordinates are the baseline scanner's RAS mm. A visit's pose (R, t) puts body point p at
scanner point q = R p + t, so a follow-up grid is rendered by sending each voxel centre q back to
p = R^T (q - t) and evaluating the model there. The truth is therefore exact: the motion is the
pose itself and the volumes are closed-form (ball, spherical caps).

Anatomy (right hip unless ``side="left"``, which mirrors x): a bright femoral head (ball) with a
neck, shaft and greater trochanter, a darker lesion cap under the superolateral dome, a cartilage
shell, a cup-like acetabulum with an ilium, soft tissue, Gaussian noise. Edges are partial-volumed
by a ramp of one voxel across each surface (smooth enough for registration, cheap to compute).

Labels are decided at voxel centres (1 head outside the lesion, 2 lesion), the head being the
ball cut by the neck plane (docs/method.md section 2), so voxel counts are unbiased estimates of the
closed-form volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARROW, LESION, CARTILAGE, PELVIS, SOFT = 1000.0, 320.0, 520.0, 700.0, 380.0


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _capsule(p, a, b, radius):
    """Signed distance to a capsule (segment a-b, radius), mm."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1) - radius


def cap_volume_ml(radius: float, height: float) -> float:
    return float(np.pi * height**2 * (3 * radius - height) / 3.0 / 1000.0)


@dataclass(frozen=True)
class HipModel:
    """The continuous model (body = baseline RAS mm)."""

    center: tuple = (6.0, -4.0, 3.0)
    radius: float = 22.0
    neck_radius: float = 13.0
    side: str = "right"
    lesion_dir: tuple = (0.35, 0.25, 0.90)  # head-frame-ish (x lateral for a right hip)

    @property
    def c(self) -> np.ndarray:
        return np.asarray(self.center, dtype=np.float64)

    @property
    def mirror(self) -> np.ndarray:
        return np.diag([1.0 if self.side == "right" else -1.0, 1.0, 1.0])

    @property
    def neck_axis(self) -> np.ndarray:
        return self.mirror @ _unit([0.72, 0.12, -0.68])

    @property
    def d(self) -> np.ndarray:
        return self.mirror @ _unit(self.lesion_dir)

    @property
    def cut(self) -> float:
        """Distance of the neck cut plane from the centre, mm."""
        return float(np.sqrt(self.radius**2 - self.neck_radius**2))

    def head_volume_ml(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius**3 / 1000.0 - cap_volume_ml(self.radius, self.radius - self.cut)

    def lesion_volume_ml(self, cap_mm: float) -> float:
        return cap_volume_ml(self.radius, cap_mm) if cap_mm > 0 else 0.0

    # sdfs, body coordinates ----------------------------------------------------------------
    def femur_sdf(self, p):
        c, n, m = self.c, self.neck_axis, self.mirror
        neck_end = c + 42.0 * n
        shaft_top = neck_end + m @ np.array([2.0, 0.0, 8.0])
        shaft_bottom = neck_end + m @ np.array([-6.0, 2.0, -110.0])
        troch = neck_end + m @ np.array([9.0, -4.0, 12.0])
        d = np.linalg.norm(p - c, axis=-1) - self.radius
        d = np.minimum(d, _capsule(p, c, neck_end, self.neck_radius))
        d = np.minimum(d, _capsule(p, shaft_top, shaft_bottom, 15.0))
        return np.minimum(d, np.linalg.norm(p - troch, axis=-1) - 12.0)

    def lesion_sdf(self, p, cap_mm):
        rel = p - self.c
        return np.maximum(np.linalg.norm(rel, axis=-1) - self.radius, (self.radius - cap_mm) - rel @ self.d)

    def pelvis_sdf(self, p):
        c, m = self.c, self.mirror
        a = m @ _unit([-0.45, 0.10, 0.90])  # cup axis: superomedial
        rel = p - c
        dist = np.linalg.norm(rel, axis=-1)
        cup = np.maximum(np.maximum(dist - (self.radius + 10.0), (self.radius + 2.5) - dist),
                         -(rel @ a + 0.3 * (self.radius + 10.0)))
        ilium = _capsule(p, c + 28.0 * a, c + m @ np.array([-25.0, -8.0, 95.0]), 13.0)
        return np.minimum(cup, ilium)

    def cartilage_sdf(self, p):
        """Joint cartilage: a 2 mm shell over the head (the marrow is drawn over its inside)."""
        return np.linalg.norm(p - self.c, axis=-1) - (self.radius + 2.0)

    def intensity(self, p, cap_mm: float, ramp_mm: float) -> np.ndarray:
        """Noise-free T1-like signal at body points (..., 3)."""
        def frac(sdf):
            return np.clip(0.5 - sdf / ramp_mm, 0.0, 1.0)

        img = np.full(p.shape[:-1], SOFT)
        img += (PELVIS - img) * frac(self.pelvis_sdf(p))
        img += (CARTILAGE - img) * frac(self.cartilage_sdf(p))
        img += (MARROW - img) * frac(self.femur_sdf(p))
        if cap_mm > 0:
            img += (LESION - img) * frac(self.lesion_sdf(p, cap_mm))
        return img

    def labels(self, p, cap_mm: float) -> np.ndarray:
        rel = p - self.c
        head = (np.linalg.norm(rel, axis=-1) <= self.radius) & (rel @ self.neck_axis <= self.cut)
        out = head.astype(np.uint8)
        if cap_mm > 0:
            out[head & (self.lesion_sdf(p, cap_mm) <= 0)] = 2
        return out


def grid(shape, spacing, centre_mm, rotation=None) -> np.ndarray:
    """Affine of a grid of ``shape`` voxels of ``spacing`` mm centred on ``centre_mm``."""
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = np.asarray(centre_mm, dtype=np.float64) - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return aff


def render(model: HipModel, shape, affine, cap_mm: float, pose=None, noise: float = 25.0, seed: int = 0,
           chunk: int = 1 << 20):
    """Image (int16) and labels (uint8) of one visit on a grid, the body in ``pose`` (R, t);
    None is the baseline pose (identity)."""
    rot, t = (np.eye(3), np.zeros(3)) if pose is None else pose
    rot, t = np.asarray(rot, dtype=np.float64), np.asarray(t, dtype=np.float64)
    ramp = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).mean())
    n = int(np.prod(shape))
    img = np.empty(n, dtype=np.float64)
    labels = np.empty(n, dtype=np.uint8)
    for start in range(0, n, chunk):  # bounded memory for clinical-size grids
        flat = np.arange(start, min(start + chunk, n))
        idx = np.stack(np.unravel_index(flat, shape), axis=1).astype(np.float64)
        p = (idx @ affine[:3, :3].T + affine[:3, 3] - t) @ rot  # R^T (q - t), row-wise
        img[flat] = model.intensity(p, cap_mm, ramp)
        labels[flat] = model.labels(p, cap_mm)
    img = img.reshape(shape) + np.random.default_rng(seed).normal(0.0, noise, shape)
    return img.astype(np.int16), labels.reshape(shape)


def rotation(axis, degrees) -> np.ndarray:
    axis = _unit(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def rotation_error_deg(r_est, r_true) -> float:
    cos = (np.trace(np.asarray(r_est).T @ np.asarray(r_true)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
