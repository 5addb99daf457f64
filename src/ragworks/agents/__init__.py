"""ragworks.agents."""
