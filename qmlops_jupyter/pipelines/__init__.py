"""Notebook pipelines: a notebook executed by papermill with its parameters injected, its
kernel in a process group the run can time out and kill, with retries, its executed notebook
kept under ``QMLOPS_HOME/pipelines/runs/<id>/`` and logged to MLflow.

``runner.run_pipeline`` runs one; ``store.PipelineRuns`` reads and writes the ledger's
``pipeline_runs`` table; ``models.PipelineRun`` is what the CLI's ``--json`` prints.
``schedules`` keeps saved pipelines and their cron schedules, ``parking`` parks and resumes
runs waiting on provider jobs, ``sweep`` fans a grid out on Dask, ``notify`` announces ends,
``watch`` ends runs whose runner died; ``host.PipelineHost`` is the engine host's share of it.
"""
