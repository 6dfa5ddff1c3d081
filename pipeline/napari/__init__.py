"""The napari plugin (npe2 manifest: ``napari.yaml`` beside this file).

- ``_reader``: NIfTI, NRRD, MetaImage, DICOM -> Image or Labels layers whose ``affine`` maps the
  canonical voxel array to RAS mm (napari world coordinates = RAS mm, oblique exact).
- ``_writer``: a Labels layer -> NIfTI on the image file's own grid (what ``onfh analyze --labels``
  reads back voxel for voxel).
- ``_sample_data``: the synthetic sample cohort with its label maps and landmarks.
- ``_widget``: the "Analyze hip" dock widget (the CLI's measurement and automatic
  segmentation, in worker threads).
- ``_compare``: the "Compare visits" dock widget (``onfh compare``'s registration, change map
  and regeneration figures, in a worker thread).
- ``_measure``: what the widgets compute, without Qt.
- ``_review``: ``onfh review [IMAGE ...]`` (both widgets docked).

Importing this package does not import napari or Qt; the submodules that need them do.
"""
