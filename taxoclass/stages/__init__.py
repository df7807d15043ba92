"""The four TaxoClass stages; plain PyTorch, no Ray, no wandb."""
