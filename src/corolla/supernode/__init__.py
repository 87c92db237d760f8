"""Corolla supernode."""
