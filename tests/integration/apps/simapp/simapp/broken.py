"""A ClientApp module that cannot be imported (tests point the app's clientapp here)."""

import simapp_no_such_module  # noqa: F401

from corolla.clientapp import ClientApp

app = ClientApp()
