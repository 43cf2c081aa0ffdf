"""The embedded Overshoot-compatible server."""
