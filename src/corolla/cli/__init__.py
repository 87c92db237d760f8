"""Corolla cli."""
