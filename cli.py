"""Top-level entry kept for ``python cli.py ...`` and ``torchrun ... cli.py ...``; the commands live in
:mod:`landscape.cli`."""
from landscape.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
