"""The commands of `mogli-bridge`, one module each; `cli.py` parses and dispatches to them."""
