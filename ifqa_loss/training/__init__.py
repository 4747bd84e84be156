"""Training code: data, degradations, objectives and loops for the quality models."""
