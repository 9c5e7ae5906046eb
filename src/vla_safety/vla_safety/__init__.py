"""Fail-closed safety monitor between the policy and the robot: limits, validation, watchdogs, latched e-stop, driver adapters."""
