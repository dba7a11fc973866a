"""Forges: where issues come from and pull requests land (GitHub first)."""
