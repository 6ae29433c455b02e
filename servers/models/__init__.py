"""Tiny model makers for tests and demos (``loadgen models make-tiny``)."""
