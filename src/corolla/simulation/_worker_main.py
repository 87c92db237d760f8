"""``python -m corolla.simulation._worker_main``: a simulation worker process.

A module of its own, never imported by the package, so that running it does not import it
twice (`corolla.simulation` imports `corolla.simulation._worker`)."""

from corolla.simulation._worker import main

if __name__ == "__main__":
    main()
