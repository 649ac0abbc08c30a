"""supermin: compile small Linux appliances from distribution packages."""

__version__ = "0.1.0"
