"""Gradient-overhead and throughput benchmarks (``ifqa-loss bench`` / ``python -m benchmarks.overhead``)."""
