"""Corolla superlink."""
