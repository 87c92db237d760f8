"""A ServerApp that prints which process ran it and optionally sleeps."""

import os
import time

from corolla.app import Context
from corolla.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    print(f"waiter marker={context.run_config['marker']} pid={os.getpid()}", flush=True)
    time.sleep(float(context.run_config["sleep"]))
    print("waiter done", flush=True)
