"""Replay, backtest, the sandbox cloud, scenario generation, benchmarks and reports.

Everything here drives the same engine and decision core as the live daemon; only the adapters
differ. The engine is built by `daemon.bootstrap` and handed in (`build_engine`): this package is an
adapter layer below the bootstrap and imports neither it nor `daemon.engine`.
"""
