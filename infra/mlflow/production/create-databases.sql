-- Runs by PostgreSQL's entrypoint on the first start only: the runs/registry database
-- (POSTGRES_DB=mlflow) exists already; the auth app's users and permissions get their own.
CREATE DATABASE mlflow_auth OWNER mlflow;
