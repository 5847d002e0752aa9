"""The detection benchmark's command line: `python -m benchmarks.detection [--quick] --out DIR`.

`simulations.benchmark` does the work (it is a simulation, below the bootstrap, and never builds an
engine); this entry point hands it the bootstrap's engine factory, as the CLI does for replay.
"""
from __future__ import annotations

from daemon.bootstrap import engine_factory
from simulations.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main(build_engine=engine_factory("benchmark")))
