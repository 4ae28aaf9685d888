"""HTTP: middlewares, parameters, public and internal routes, dashboard, OpenAPI."""
