"""One module of routes per resource; each handler parses, calls one service, shapes the answer."""
