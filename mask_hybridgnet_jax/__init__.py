"""Graph-based anatomical segmentation trained from pixel masks (JAX/Flax)."""

__version__ = "0.1.0"
