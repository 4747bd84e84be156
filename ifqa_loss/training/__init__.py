"""Data, degradations, objectives and loops that train networks (GFIQA, IFQA)."""
