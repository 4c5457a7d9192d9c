"""landscape: sharp-vs-flat minima analysis for image-quality-assessment models."""
__version__ = "0.1.0"
