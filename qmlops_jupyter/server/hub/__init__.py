"""The JupyterHub side: the `qmlops` and `mlflow` services a team's hub runs."""
