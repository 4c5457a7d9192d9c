"""`landscape` command line: one module per verb; each parses options and calls the library.

``app`` is the root typer app, ``main`` the entry point with the one-line error contract
(see ``landscape --help``).
"""
from landscape.cli.app import app, main

__all__ = ["app", "main"]
