"""ragworks.tools."""
