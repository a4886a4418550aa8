"""Endpoint configurations: rendering them as templates, and checking them before a job runs."""
