"""Wiring: the agent, server, ingester and API processes built from the layers below."""
