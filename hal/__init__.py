"""Hardware layer: device interfaces, typed readings, real and emulated backends.

Nothing here imports Pyro5, Bottle or a scheduler; hardware libraries (smbus2,
rpi_ws281x, gpiozero's real pin factories) are imported only by the real backends.
"""
