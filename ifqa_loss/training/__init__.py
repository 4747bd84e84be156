"""Data, degradations, objectives and loops that train networks (GFIQA now; IFQA and ablations next)."""
