"""Speed measurements; figures and the commands that reproduce them in benchmarks/README.md."""

import ffl_tf  # noqa: F401  (imports TensorFlow quietly, before the benchmark modules do)
