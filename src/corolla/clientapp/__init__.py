"""The ClientApp user API: `ClientApp` and its built-in mods (`corolla.clientapp.mod`)."""

from corolla.clientapp import mod
from corolla.clientapp.clientapp import ClientApp

__all__ = ["ClientApp", "mod"]
