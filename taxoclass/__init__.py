"""taxoclass: hierarchical multi-label classification from class names alone (TaxoClass).

    import taxoclass
    model = taxoclass.load("runs/demo")              # a finished run dir
    model.predict(["Noise-cancelling earbuds"], top_k=5, path=True)
"""

__version__ = "0.1.0"


def load(run_dir, device: str = "auto"):
    """A finished run's model; `.predict(texts, top_k=3, path=False)` returns the records `taxoclass predict` prints."""
    from taxoclass.predict import load as load_run

    return load_run(run_dir, device)
