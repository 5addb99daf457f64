"""ragworks.eval."""
