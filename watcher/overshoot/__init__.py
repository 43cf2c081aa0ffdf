"""Client side of the Overshoot API (and the ovs:// grammar the server shares)."""
