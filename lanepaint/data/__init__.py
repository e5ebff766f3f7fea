"""Data formats: lane vocabulary, FluxFill dataset, VideoPainter layout, synthetic scenes."""
