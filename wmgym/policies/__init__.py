"""Policies: inverse dynamics, planners in imagination, and the policy interface shared by SimFold-v0 and WMFold-v0."""
