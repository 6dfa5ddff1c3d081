"""ITK's process-wide thread count, set to one for a piece of work."""

from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def one_itk_thread():
    """Run ITK filters on one thread for the duration.

    Two reasons share this: registration sums run in another order with more threads, so the
    transform changes in its eighth digit and the same input would not give the same numbers; and
    a batch runs one task per core, where ITK's own threads would only compete.

    The count is process-wide. In the main thread the previous count is restored afterwards; in
    any other thread (a Dask worker running several tasks, napari's worker) it stays 1, because
    restoring it while another task runs would change that task's thread count under it.
    """
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
