"""Alerts: each user's own alerts, their settings, organisation defaults and escalations."""
