"""Reliability and security tests: a run must never be lost to a typo, a bad image or a killed process."""
