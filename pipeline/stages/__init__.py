"""Curation stages: each a small module whose core works on plain data; none imports Ray."""
