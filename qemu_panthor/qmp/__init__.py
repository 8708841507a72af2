"""qmp package."""
