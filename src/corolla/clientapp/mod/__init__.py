"""Built-in mods, to wrap a ClientApp's handlers: ``ClientApp(mods=[...])`` or per handler,
``@app.train(mods=[...])``.

A mod is called as ``mod(msg, context, call_next)`` and returns the reply; ``call_next`` runs the
rest of the chain and the handler.

- `LocalDpMod`: local differential privacy (clip the update, add Gaussian noise).
- `fixedclipping_mod`, `adaptiveclipping_mod`: client-side clipping for the client-side central
  DP wrappers (`DifferentialPrivacyClientSideFixedClipping`, `...AdaptiveClipping`).
- `message_size_mod`, `arrays_size_mod`: log the size of what arrives.
"""

from corolla.clientapp.mod._centraldp import adaptiveclipping_mod, fixedclipping_mod
from corolla.clientapp.mod._comms import arrays_size_mod, message_size_mod
from corolla.clientapp.mod._localdp import LocalDpMod

__all__ = [
    "LocalDpMod",
    "adaptiveclipping_mod",
    "arrays_size_mod",
    "fixedclipping_mod",
    "message_size_mod",
]
