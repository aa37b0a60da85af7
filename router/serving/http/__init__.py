"""The HTTP app: one module per endpoint group, as module-level FastAPI routers (chat, models,
health), the one place errors are rendered (errors.py), what the routes are given (state.py),
and `create_api` (api.py), which mounts these and the finance and continuous routers."""
