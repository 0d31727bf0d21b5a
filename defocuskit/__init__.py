"""defocuskit: single-image defocus deblurring research toolkit."""

__version__ = "0.1.0"
