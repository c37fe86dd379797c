"""sturdynet: compress image classifiers and tell the truth about their robustness."""
__version__ = "0.1.0"
