"""Format loaders; importing this package registers them in ``records.LOADERS``."""
from landscape.data.formats import csv_generic, kadid10k, koniq10k, livec, pyiqa, spaq  # noqa: F401
