"""KFP components: one thin wrapper per stage that calls ``lanepaint.stages``."""
