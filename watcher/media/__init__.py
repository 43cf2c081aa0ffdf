"""Video sources and WebRTC publishers."""
