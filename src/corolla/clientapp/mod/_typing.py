"""The shapes of a mod and of what it calls next (Flower's ``ClientAppCallable`` and ``Mod``),
defined with the `ClientApp` that composes them."""

from corolla.clientapp.clientapp import ClientAppCallable, Mod

__all__ = ["ClientAppCallable", "Mod"]
