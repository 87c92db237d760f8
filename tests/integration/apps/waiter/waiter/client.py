"""The waiter app's ClientApp handles nothing: its ServerApp sends no messages."""

from corolla.clientapp import ClientApp

app = ClientApp()
