"""The HTTP side of the engine: app factory, routes, auth, errors, streaming."""
