"""Benchmark support shared by tools/benchmark_*.py: the harness (machine, load, timing, peaks, rows), FLOP
formulas, roofline / profile rows and the authors' training-free loop that tools/benchmark_inference.py times.
run_all.sh runs every benchmark for docs/benchmarks.md (on an idle machine)."""
