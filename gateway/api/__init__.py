"""HTTP endpoints. Only app.py imports this package."""
