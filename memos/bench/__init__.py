"""Reproducible benchmarks behind ``memos bench …``; results go to BENCHMARKS.md."""
