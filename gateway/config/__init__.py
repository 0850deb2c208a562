"""Gateway settings: one YAML file, validated once into immutable objects."""

from gateway.config.load import load_settings
from gateway.config.schema import Settings

__all__ = ["Settings", "load_settings"]
