"""The command line ops use: serve, policy, keys, spend, classifier-rollout, feedback, loadtest."""
