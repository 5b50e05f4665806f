"""The `harvester` command: the composition root (the only place that builds the web server), health, PKI, demo."""
