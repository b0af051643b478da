"""Sysdig Secure -> JupiterOne graph sync: hooks, data model, transforms and emulators."""
