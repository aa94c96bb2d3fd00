"""Waymark's load bench: the server measured beside its transport and database ceilings."""
