"""regate's version: one place, read by the package metadata, bundle manifests and the CLI."""

__version__ = "0.1.0"
