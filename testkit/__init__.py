"""Helpers shared by tests/ and benches/ (never imported by jitrs): the official JiT code re-created as an oracle."""
