"""Start, locate and populate the Pyro5 name server."""
