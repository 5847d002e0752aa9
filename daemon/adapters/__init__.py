"""Adapters between the engine and the outside world: Pub/Sub, Cloud Monitoring, the journal,
decision logs, HTTP health. Chosen in one place: daemon.bootstrap."""
