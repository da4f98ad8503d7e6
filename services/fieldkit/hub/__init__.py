"""The hub: its TLS broker, the ingest service and the database (see the submodules)."""
