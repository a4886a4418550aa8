"""colmena-fed."""
