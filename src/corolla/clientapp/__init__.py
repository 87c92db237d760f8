"""The ClientApp user API."""

from corolla.clientapp.clientapp import ClientApp

__all__ = ["ClientApp"]
