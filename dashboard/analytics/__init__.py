"""Analytics: KPIs, charts and CSV exports for the center, a hospital and an agency."""
