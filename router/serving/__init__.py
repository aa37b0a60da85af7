"""The request path: HTTP routes, the Gateway, the RouterService, expert and classifier callers,
and the Serve shell (app graph, ingress, server start/stop, hot reload)."""
