"""Clients: how one request is sent and how its response is timed and recorded."""
