"""lvstop: see every IPVS virtual service and real server live, export them, drain safely."""

__version__ = "0.1.0"
