"""Helpers shared by the tests: stand-in servers that speak the real protocols, and process fixtures."""
