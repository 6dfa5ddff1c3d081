"""`qc.png`: what a radiologist checks at a glance (METHOD.md sections 1 and 4).

Mid-coronal and mid-sagittal planes through the head centre, sampled in world space (so oblique
scans look like straight ones), in the radiological convention: coronal with the patient's right
on the viewer's left, sagittal with anterior on the left, superior up. Overlaid: head and lesion
outlines, the fitted sphere, the JIC zone boundaries and the acetabular edge (coronal), the
antero-posterior region boundaries (sagittal), and the lesion's contact with the head surface
(the necrotic arcs). A third panel shows the 3D meshes seen from the front.

matplotlib is imported here only, so measuring without a picture stays fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .frame import HeadFrame, plane_points, sample_plane
from .mesh import mask_mesh

MAX_FACES = 6000


def sample_image_plane(data: np.ndarray, affine: np.ndarray, frame: HeadFrame, plane: str,
                       a_mm: np.ndarray, w_mm: np.ndarray) -> np.ndarray:
    """Image intensities on a mid-plane pixel grid (trilinear; 0 outside the field of view)."""
    pts = plane_points(frame, plane, a_mm, w_mm)
    inv = np.linalg.inv(affine)
    ijk = pts @ inv[:3, :3].T + inv[:3, 3]
    return ndimage.map_coordinates(np.asarray(data, dtype=np.float32), np.moveaxis(ijk, -1, 0),
                                   order=1, mode="constant", cval=0.0)


def write_qc_png(path: str | Path, analysis, title: str = "") -> None:
    """Draw the QC picture of an :class:`pipeline.analyze.Analysis` that has a head frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame: HeadFrame = analysis.frame
    m = analysis.metrics
    scan = analysis.scan
    half = frame.radius * 2.0
    step = max(0.25, float(scan.spacing.min()) / 2)
    fig = plt.figure(figsize=(13, 5.0), dpi=100)
    for col, plane in enumerate(("coronal", "sagittal")):
        ax = fig.add_subplot(1, 3, col + 1)
        head = sample_plane(analysis.head, scan.affine, frame, plane, step, half)
        lesion = sample_plane(analysis.lesion, scan.affine, frame, plane, step, half)
        img = sample_image_plane(scan.data, scan.affine, frame, plane, head.a_mm, head.w_mm)
        lo, hi = np.percentile(img[head.in_fov], [1, 99.5]) if head.in_fov.any() else (0, 1)
        extent = [head.a_mm[0], head.a_mm[-1], head.w_mm[0], head.w_mm[-1]]
        ax.imshow(img.T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
        _outline(ax, head, "#33d17a", "head")
        _outline(ax, lesion, "#ff4040", "lesion")
        circle = np.linspace(0, 2 * np.pi, 361)
        ax.plot(frame.radius * np.cos(circle), frame.radius * np.sin(circle), ":", color="#9ad7ff", lw=0.8,
                label=f"sphere r = {frame.radius:.1f} mm")
        _contact(ax, head, lesion)
        if plane == "coronal":
            _zone_lines(ax, m, frame.radius)
        else:
            for v in (-frame.radius / 3, frame.radius / 3):
                ax.axvline(v, color="#ffd34d", lw=0.8, ls="--")
            for x, name in ((frame.radius * 2 / 3, "anterior"), (0, "central"), (-frame.radius * 2 / 3, "posterior")):
                ax.text(x, -frame.radius * 1.3, name, color="#ffd34d", ha="center", fontsize=7)
        arc = m.get(f"arc_{plane}_deg")
        # Radiological convention: patient's right and anterior on the viewer's left.
        screen_left_is_positive = plane == "sagittal" or frame.side == "right"
        if screen_left_is_positive:
            ax.invert_xaxis()
        lateral, medial = ("lateral", "medial") if plane == "coronal" else ("anterior", "posterior")
        ax.set_xlabel(f"{'u' if plane == 'coronal' else 'v'} (mm)   ← {lateral if screen_left_is_positive else medial}"
                      f" | {medial if screen_left_is_positive else lateral} →", fontsize=8)
        ax.set_ylabel("w (mm, superior up)", fontsize=8)
        ax.set_title(f"mid-{plane}" + (f"  arc {arc:.0f}°" if arc is not None else "  arc -"), fontsize=10)
        ax.tick_params(labelsize=7)
        ax.legend(loc="lower left", fontsize=6, framealpha=0.6)
    ax3 = fig.add_subplot(1, 3, 3, projection="3d")
    _meshes(ax3, analysis, frame)
    fig.suptitle(_summary(m, title), fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.86, wspace=0.25)  # tight_layout costs 0.5 s
    fig.savefig(path)
    plt.close(fig)


def _outline(ax, sample, color, label):
    if sample.image.any():
        ax.contour(sample.a_mm, sample.w_mm, sample.image.T.astype(float), levels=[0.5], colors=[color],
                   linewidths=1.1)
        ax.plot([], [], color=color, label=label)


def _contact(ax, head, lesion, shell_mm=2.0):
    """Lesion pixels within shell_mm of the head outline: the contact that the arc measures."""
    step = float(head.a_mm[1] - head.a_mm[0])
    depth = ndimage.distance_transform_edt(np.pad(head.image, 1), sampling=step)[1:-1, 1:-1]
    contact = lesion.image & head.image & (depth <= shell_mm)
    if contact.any():
        ia, iw = np.nonzero(contact)
        ax.scatter(head.a_mm[ia], head.w_mm[iw], s=0.3, alpha=0.5, color="#ff9d00", lw=0,
                   label="surface contact (arc)")


def _zone_lines(ax, m, radius):
    span = m.get("weight_bearing") or {}
    if span.get("u_lat_mm") is None:
        return
    u_med, u_lat = span["u_med_mm"], span["u_lat_mm"]
    t1, t2 = u_med + (u_lat - u_med) / 3, u_med + 2 * (u_lat - u_med) / 3
    for u in (t1, t2):
        ax.axvline(u, color="#ffd34d", lw=0.8, ls="--")
    ax.axvline(u_lat, color="#ff66ff", lw=1.0, ls="-", label=f"acetabular edge ({span.get('source')})")
    ax.axvline(u_med, color="#ff66ff", lw=0.6, ls=":")
    third = (u_lat - u_med) / 3
    centres = {"A": t1 - third / 2, "B": (t1 + t2) / 2, "C1": (t2 + u_lat) / 2, "C2": u_lat + third / 2}
    for name, u in centres.items():
        ax.text(u, radius * 1.25, name, color="#ffd34d", ha="center", fontsize=8, weight="bold")


def _meshes(ax, analysis, frame):
    """Light display meshes (coarser marching cubes, never used for measurement)."""
    spacing = float(analysis.scan.spacing.min())
    step = max(1, int(round(1.5 / spacing)))
    for mask, color, alpha in ((analysis.head, "#b0b0b0", 0.2), (analysis.lesion, "#ff3030", 0.85)):
        if not mask.any():
            continue
        verts, faces = mask_mesh(mask, analysis.scan.affine, step=step)
        if len(faces) > MAX_FACES:
            verts, faces = mask_mesh(mask, analysis.scan.affine, step=step * 2)
        ax.plot_trisurf(verts[:, 0], verts[:, 1], verts[:, 2], triangles=faces, color=color, alpha=alpha,
                        linewidth=0, shade=True)
    r = frame.radius * 1.2
    c = frame.center
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=15, azim=-90)  # seen from the front (anterior), patient's right on the left
    ax.set_xlabel("x R (mm)", fontsize=7)
    ax.set_ylabel("y A", fontsize=7)
    ax.set_zlabel("z S", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title("3D (anterior view)", fontsize=10)


def _summary(m, title):
    def f(key, fmt):
        v = m.get(key)
        return "-" if v is None else format(v, fmt)

    head = f"{title}  {m['side']} hip" if title else f"{m['side']} hip"
    return (f"{head}: head {f('head_volume_ml', '.1f')} mL, lesion {f('lesion_volume_ml', '.2f')} mL, "
            f"NF {f('necrotic_fraction_pct', '.1f')} % (size {m.get('size_class') or '-'}), "
            f"JIC {m.get('jic_type') or '-'} (3D {m.get('jic_type_3d') or '-'}), ARCO {f('arco2021_type', 'd')}, "
            f"CNA {f('cna_deg', '.0f')}° (Kerboul {f('kerboul_grade', 'd')}), "
            f"sphere rms {f('sphere_fit_rms_mm', '.2f')} mm; warnings: {len(m.get('warnings', []))}"
            + _masks_line(m.get("segmentation") or {}))


def _masks_line(seg: dict) -> str:
    """Where the masks came from, and an automatic segmentation's review flags (a reviewer decides
    from the picture which scans to open)."""
    from .analyze import segmentation_confidence

    line = f"\nmasks: {seg.get('method', '-')}"
    confidence = segmentation_confidence(seg)
    if confidence and confidence.get("status") == "review":
        flags = "; ".join(confidence.get("flags") or [])
        line += f" | REVIEW: {flags if len(flags) <= 150 else flags[:147] + '...'}"
    elif confidence:
        line += " | automatic QC ok"
    return line
