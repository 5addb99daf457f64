"""ragworks.serving."""
