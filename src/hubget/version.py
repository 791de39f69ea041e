"""The version of hubget: one place, read by the package metadata, the CLI and the User-Agent."""

__version__ = "0.1.0"
