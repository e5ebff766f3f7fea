"""The edit stage's parts: instructions, the first frame with its judge loop, outputs."""
