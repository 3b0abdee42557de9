"""Experiments use the chaoskit plugin's ``chaos`` fixture; nothing else is needed here."""
