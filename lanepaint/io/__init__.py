"""Storage (local paths and gs:// URIs), video decode/encode and atomic writes."""
