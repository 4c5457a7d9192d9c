"""Dataset format loaders, one file per format, and the open registry they fill.

The contract and the registry live in :mod:`landscape.data.formats._base`; importing this
package registers the built-in formats in this order (the order of
:data:`~landscape.data.formats._base.FORMATS` in help texts and errors): ``synthetic``,
``koniq10k``, ``kadid10k``, ``livec``, ``spaq``, ``csv``, ``pyiqa``. Any other code can add a
format with ``@register_format("name")``.
"""
from landscape.data.formats import synthetic, koniq10k, kadid10k, livec, spaq, csv_generic, pyiqa  # noqa: F401, I001
from landscape.data.formats._base import (FORMATS, LOADERS, FormatNames, Loader, LoadOptions, RawRow, RawTable,
                                          check_format, loader_for, register_format)

__all__ = ["FORMATS", "LOADERS", "FormatNames", "Loader", "LoadOptions", "RawRow", "RawTable", "check_format",
           "loader_for", "register_format"]
