"""Training shared by stages 3 and 4: the step, the env (one process or a DDP rank), the keeper, silver validation."""
