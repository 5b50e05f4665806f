"""The hub's Bottle app: dashboard pages and the JSON API."""
