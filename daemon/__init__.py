"""rollbackd: automated canary analysis and rollback for Google Cloud Run.

`daemon.core` is the pure decision core; `daemon.ports` the interfaces to the outside world;
`daemon.engine` feeds events to the core and carries out its commands; `daemon.adapters` (with
`actions` and `simulations`) implement the ports; `daemon.bootstrap` chooses them and builds the
engine for every mode; `daemon.cli` is the command line. The layers are in the README and enforced
by the import-linter contract in pyproject.toml.
"""
