"""Reproductions: plans of runs per budget, the executors that run them, the results tables."""
