"""Money and access: API keys, budgets and rate limits, the cost arithmetic, the Redis ledger,
the spend API and the finance dashboard's static files."""
