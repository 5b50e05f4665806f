"""The remote faces of a node's devices: sensor, LED strip, buzzer and plugin-runner actors, and their supervision."""
