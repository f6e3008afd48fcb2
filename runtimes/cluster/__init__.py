"""A gateway of several processes and nodes: what they share and how a request reaches the
node whose tunnel serves it (see docs/scaling.md)."""
