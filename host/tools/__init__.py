"""Board tooling: build the firmware bundle, flash MicroPython, deploy a station, provision."""
