"""csf package."""
