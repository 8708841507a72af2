"""Helpers shared by the tests (importable as ``support.*``: pyproject puts tests/ on the path)."""
