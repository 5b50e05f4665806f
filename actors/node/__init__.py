"""A node's composition and lifecycle: its config, the agent that builds and runs it, scheduled jobs, systemd."""
