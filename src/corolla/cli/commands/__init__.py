"""The `flwr` subcommands, one module each; `corolla.cli.main` registers them."""
