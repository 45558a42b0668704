"""Pipelines: a DAG of job stages, completion markers, output wiring, one MLflow parent run."""
