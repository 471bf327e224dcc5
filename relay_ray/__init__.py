"""relay_ray: relay generation (a large and a small model taking turns) served on Ray."""

__version__ = "0.1.0"
