"""Stage 1 of the data flow: reading scans (NIfTI, NRRD, MHA, DICOM) and manifests with exact
geometry, and writing outputs atomically."""
