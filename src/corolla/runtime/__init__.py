"""Corolla runtime."""
