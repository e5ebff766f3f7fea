"""lanepaint: lane-marking video editing and lane-marking training data.

The library holds all logic; the CLI (`lanepaint.cli`) and the KFP components call the
stage functions in `lanepaint.stages`. It never imports kfp.
"""

__version__ = "0.1.0"
