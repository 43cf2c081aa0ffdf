"""Schemathesis hooks for the conformance runs (loaded through ``SCHEMATHESIS_HOOKS``).

A WHIP offer is ``application/sdp``: plain text on the wire.
"""

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
