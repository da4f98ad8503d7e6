"""fieldkit: software for My Number Card application-support field kits."""

__version__ = "0.1.0"
