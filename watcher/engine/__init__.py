"""Rules: scheduled questions, structured answers, alert state."""
