"""ragworks.testing.emulators."""
