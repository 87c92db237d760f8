"""The ServerApp user API."""

from corolla.serverapp.grid import Grid
from corolla.serverapp.serverapp import ServerApp

__all__ = ["Grid", "ServerApp"]
