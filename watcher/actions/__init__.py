"""Actions: where alert events are delivered (webhook, Slack, email), durably."""
