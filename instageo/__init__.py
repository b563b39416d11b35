"""instageo: from field observations and satellite imagery to a small, fast model and a map."""

__version__ = "0.1.0"
