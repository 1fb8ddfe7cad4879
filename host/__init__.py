"""Host-side tools of evse (CPython): central system, bench, simulator and board tooling."""
