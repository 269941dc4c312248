"""MLflow: the runs of every command (tracker.py), the model registry (registry.py), promotion and roll-back with an
audit trail (promotion.py) and the lock that serializes them (locks.py). Registry stages are deprecated since
MLflow 2.9: promotion moves the aliases `staging` and `production`."""
