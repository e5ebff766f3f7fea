"""One module per pipeline stage; each exposes a plain function with a typed config."""
