"""Sysdig Secure -> JupiterOne graph sync: hooks, data model, transforms, publishing, UI plugin."""
