"""Speed and memory measurements of wasp (`make bench`), written to docs/benchmarks.md."""
