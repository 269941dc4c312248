"""The phases the flows are wired from, each over the tasks and tracked in MLflow: validate, train, compress,
measure, judge and publish (the run pipeline), the search's study, trials and front, and the KD bench's students.
A phase takes the run's context (context.py) and typed results of the phases before it."""
