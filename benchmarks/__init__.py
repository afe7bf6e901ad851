"""Throughput and memory benchmarks; each writes its results to benchmarks/results/."""
