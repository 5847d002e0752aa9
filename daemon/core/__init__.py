"""The pure decision core: typed events, the rollout state machine, step() and decision records.

Nothing in this package does I/O, reads the clock, starts threads or imports google.*; a test
(tests/unit/test_layering.py) keeps it so.
"""
