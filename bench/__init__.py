"""Hand-run benchmarks (never part of the test suite): `python -m bench.archive`."""
