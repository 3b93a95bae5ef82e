"""Drift statistics and reports, canary rollouts, the gateway's production loop."""
