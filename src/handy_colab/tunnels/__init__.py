"""Reverse-tunnel backends: one module each, behind `tunnels.base.Tunnel`."""
