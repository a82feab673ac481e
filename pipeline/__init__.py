"""audiomill curation library: raw recordings to curated WebDataset shards (see DESIGN.md)."""
__version__ = "0.1.0"
