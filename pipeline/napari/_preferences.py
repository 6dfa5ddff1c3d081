"""onfh's reader as napari's default for medical images (NIfTI, NRRD, MetaImage, DICOM folders).

How napari 0.9.2 picks a reader (``napari/components/viewer_model.py: ViewerModel.open`` and
``_open_or_raise_error``; ``napari/plugins/utils.py: get_preferred_reader``):

- ``napari scan.nii.gz``, File > Open and drag-and-drop call ``viewer.open(paths, plugin=None)``.
  napari lists the readers whose npe2 ``filename_patterns`` match (a folder: the readers with
  ``accepts_directories: true``). One reader: it is used. Several: the user's reader preference,
  ``napari.settings.get_settings().plugins.extension2reader`` (``{"*.nii.gz": "onfh-pipeline"}``;
  the most specific matching pattern wins; a folder is matched with a trailing separator); without
  one, napari asks (a dialog) or, from Python, raises ``MultipleReaderError``. npe2 has no reader
  priority: the order of readers and of manifests plays no part.
- napari's own reader (``napari_builtins``, imageio) declares ``*.nii``, ``*.nii.gz``, ``*.nrrd``,
  ``*.nhdr``, ``*.mha``, ``*.mhd``, ``*.dcm`` and folders too, and cannot read them with their
  geometry ("Could not find a backend"). So every file onfh reads has two candidate readers and
  only the preference makes onfh's the default.
- ``viewer.open(path)`` written without ``plugin=`` is not "no plugin": its default is
  ``plugin="napari"``, napari's own reader, and no preference is consulted. Scripts write
  ``viewer.open(path, plugin=None)`` (the preference decides) or ``plugin="onfh-pipeline"``.

napari runs no plugin code before a plugin's first command (npe2 activates plugins lazily), so the
preference is registered by :func:`on_activate`, the manifest's ``on_activate`` hook: the first
time onfh runs in napari (its reader chosen once in napari's dialog, a widget, a sample, or
``onfh review``) onfh becomes the reader for its patterns, and napari saves the setting, so every
later session opens these files with onfh. A pattern the user already assigned to a reader
(Preferences > Plugins) is never changed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

MANIFEST = Path(__file__).with_name("napari.yaml")


def reader_patterns() -> tuple[str, list[str]]:
    """The plugin name and the preference patterns of onfh's reader: the reader contribution's
    ``filename_patterns`` (from ``napari.yaml``), and ``*/`` for folders (DICOM series) when it
    ``accepts_directories``."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    patterns: list[str] = []
    for reader in manifest.contributions.readers or []:
        patterns += [p for p in reader.filename_patterns if p not in patterns]
        if reader.accepts_directories and "*" + os.sep not in patterns:
            patterns.append("*" + os.sep)  # napari matches a folder as its real path + os.sep
    return manifest.name, patterns


def prefer_onfh_reader(settings=None) -> dict[str, str]:
    """Make onfh the reader napari uses for its patterns where the user has chosen none.

    Parameters
    ----------
    settings : napari.settings.NapariSettings, optional
        Default ``napari.settings.get_settings()`` (saved to napari's settings file on change).

    Returns
    -------
    dict
        The preference entries added (empty when every pattern already had a reader).
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    plugin, patterns = reader_patterns()
    current = dict(settings.plugins.extension2reader)
    added = {p: plugin for p in patterns if p not in current}
    if added:  # one assignment: napari saves its settings file once
        settings.plugins.extension2reader = {**current, **added}
    return added


def on_activate(ctx=None) -> None:
    """npe2 ``on_activate`` hook (``napari.yaml``): register onfh's reader preference.

    Never fails the activation: a settings file that cannot be written costs only the default
    (napari then asks which reader to use), and says so.
    """
    try:
        prefer_onfh_reader()
    except Exception as exc:  # noqa: BLE001 - the plugin must load even if napari's settings cannot be saved
        warnings.warn(f"onfh could not register itself as napari's reader for medical images: {exc}",
                      RuntimeWarning, stacklevel=2)
