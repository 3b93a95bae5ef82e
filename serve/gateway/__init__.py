"""The HTTP edge: the FastAPI app, its routes, authentication, limits and the error table."""
