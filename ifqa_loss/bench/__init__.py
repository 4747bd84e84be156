"""The benchmark code behind ``ifqa-loss bench`` (results and plots are kept in the repository's ``benchmarks/``)."""
