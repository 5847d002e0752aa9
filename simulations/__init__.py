"""Replay, backtest, the sandbox cloud, scenario generation, benchmarks and reports.

Everything here drives the same engine and decision core as the live daemon; only the adapters
differ (see daemon.bootstrap).
"""
