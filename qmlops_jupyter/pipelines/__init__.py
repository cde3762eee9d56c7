"""Notebook pipelines: a notebook executed by papermill with its parameters injected, in a
child process the run can time out and kill (kernel included), with retries, its executed
notebook kept under ``QMLOPS_HOME/pipelines/runs/<id>/`` and logged to MLflow.

``runner.run_pipeline`` runs one; ``store.PipelineRuns`` reads and writes the ledger's
``pipeline_runs`` table; ``models.PipelineRun`` is what the CLI's ``--json`` prints.
"""
