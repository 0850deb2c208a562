"""Fakes the tests run against: real servers on loopback."""
