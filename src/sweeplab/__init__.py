"""sweeplab: composable, resumable experiments on image classifiers."""

__version__ = "0.1.0"
