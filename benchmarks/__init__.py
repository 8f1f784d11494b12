"""Speed and accuracy measurements; figures and the commands that reproduce them in benchmarks/README.md."""
