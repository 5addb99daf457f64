"""ragworks.testing."""
