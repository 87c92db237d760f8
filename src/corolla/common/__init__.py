"""Shared building blocks. Imports nothing from the packages above it."""
