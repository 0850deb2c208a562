"""Wire formats: pure functions that turn a client body into an upstream request and read answers back."""
