"""The dashboard reads what the other apps record; it keeps no rows of its own."""
