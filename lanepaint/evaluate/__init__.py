"""Objective edit metrics (no VLM) and the HTML report the KFP UI shows."""
