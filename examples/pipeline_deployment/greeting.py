"""What the greeting says (run.py rewrites it)."""

VERSION = "v1"
