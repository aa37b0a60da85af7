"""Continuous optimisation: classifier drift, feedback on routed requests, and safe rollout of a
new classifier (shadow, canary, promote, rollback), with their policy sections in spec.py."""
