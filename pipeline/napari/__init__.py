"""The napari plugin (npe2 manifest: ``napari.yaml`` beside this file).

- ``_reader``: NIfTI, NRRD, MetaImage, DICOM -> Image or Labels layers whose ``affine`` maps the
  canonical voxel array to RAS mm (napari world coordinates = RAS mm, oblique exact).
- ``_writer``: a Labels layer -> NIfTI on the image file's own grid (what ``onfh analyze --labels``
  reads back voxel for voxel).
- ``_sample_data``: the synthetic sample cohort with its label maps and landmarks.
- ``_widget``: the "Analyze hip" dock widget (the CLI's measurement, in a worker thread).
- ``_review``: ``onfh review [IMAGE ...]``.
- "Compare visits" (longitudinal registration and regeneration) is not built yet; it will be a
  second widget here once :mod:`pipeline.longitudinal` exists.

Importing this package does not import napari or Qt; the submodules that need them do.
"""
