"""The provider catalog in the models.dev format."""

from gateway.catalog.load import load_catalog
from gateway.catalog.schema import Catalog, Model, Provider

__all__ = ["Catalog", "Model", "Provider", "load_catalog"]
