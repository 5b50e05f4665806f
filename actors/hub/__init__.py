"""What only a hub does: ingest, store and serve the fleet's readings, alerts and tokens; watch the spokes.

A spoke never imports this package (each module costs memory on a Pi Zero); a test checks it."""
