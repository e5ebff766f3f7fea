"""Weights-free lane-marking analysis: ``analyze.analyze_image`` / ``analyze.analyze_video``.

Kept import-light (no OpenCV here) so that ``lanepaint --help`` stays fast.
"""
