"""Notifications delivered from the event log to webhooks, apprise URLs and commands."""
