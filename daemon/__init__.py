"""rollbackd: automated canary analysis and rollback for Google Cloud Run.

`daemon.core` is the pure decision core; `daemon.adapters` talk to the outside world; `daemon.cli`
is the command line. See STYLE notes in the README for the shape of the code.
"""
