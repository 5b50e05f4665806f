"""What only a spoke does: keep readings in a durable outbox and push them to the hub."""
