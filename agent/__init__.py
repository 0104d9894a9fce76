"""cabin-agent: an offline-first voice agent for car head units."""

__version__ = "0.1.0"
