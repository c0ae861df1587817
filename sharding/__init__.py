"""Devices: the mesh, the rule sets mapping logical axes to it, multi-host start-up, reports."""
