"""Operator REST API, dashboard and Prometheus metrics of the central system (aiohttp, on the
same event loop as the OCPP server)."""
