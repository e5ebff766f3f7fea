"""Road segmentation for the segment stage: the SAM2.1 video runner, a weights-free
classical fallback, mask post-processing and overlays."""
