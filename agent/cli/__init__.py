"""The `cabin-agent` command line (`app`, and `main` for the console script and `python -m agent`)."""

from agent.cli.main import app, main

__all__ = ["app", "main"]
