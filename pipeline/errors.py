"""Errors the program reports to the user as one line with exit status 2."""


class InputError(ValueError):
    """Bad input: unreadable file, wrong dimensionality, mismatched grids, absent label...

    The CLI turns it into ``onfh: error: <message>`` and exit status 2, with no traceback
    and no partial output.
    """
