"""taxoclass: hierarchical multi-label classification from class names alone (TaxoClass)."""

__version__ = "0.1.0"
