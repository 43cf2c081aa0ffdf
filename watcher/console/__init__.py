"""The web console on the status listener: alerts timeline, events with clips, cameras,
rules and silences, over a JSON API under ``/api/`` that the pages render from."""
