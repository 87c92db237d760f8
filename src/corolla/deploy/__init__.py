"""Start deployments on this machine (used by the demo, the benchmarks and the tests)."""

from corolla.deploy.local import LocalFederation

__all__ = ["LocalFederation"]
