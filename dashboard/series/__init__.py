"""Recurring series: the hospital pages of services.series."""
