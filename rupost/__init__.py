"""RuPost: a corporate mail system manager (management core)."""

__version__ = "0.2.0"
