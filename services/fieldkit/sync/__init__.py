"""The tablet's sync service: the outbox and its delivery to the hub (see ``service``)."""
