"""An Airflow DAG that runs newsbeam's batch job hourly with Beam's operator, then checks feed health.

Copy this file and newsbeam_run.py into Airflow's dags folder (or point `dags_folder` here), with
Airflow, `apache-airflow-providers-apache-beam` and `apache-airflow-providers-google` (the Beam
operator refuses to start without it, whatever the runner) installed in Airflow's own environment
(pinned in deploy/constraints/airflow-venv.txt; `make airflow-venv` builds it). newsbeam runs in its own
environment, named by these variables (read when the DAG is parsed):

    NEWSBEAM_PYTHON   newsbeam's interpreter (default /opt/newsbeam/.venv/bin/python)
    NEWSBEAM_CONFIG   the config file (default /opt/newsbeam/configs/local.yaml)
    NEWSBEAM_OUTPUT   the output folder or gs:// / s3:// URL (default /var/lib/newsbeam/output)

`newsbeam_run` is `newsbeam run` through `BeamRunPythonPipelineOperator` (DirectRunner here; set
`runner="DataflowRunner"` and the Dataflow options to run it on Google Cloud). `feed_health` then
runs `newsbeam report OUTPUT --alerts`, which exits 6 when a feed is failing or stale: the task
fails, and Airflow's own alerting (email, callbacks) tells someone.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

NEWSBEAM_PYTHON = os.environ.get("NEWSBEAM_PYTHON", "/opt/newsbeam/.venv/bin/python")
NEWSBEAM_CONFIG = os.environ.get("NEWSBEAM_CONFIG", "/opt/newsbeam/configs/local.yaml")
NEWSBEAM_OUTPUT = os.environ.get("NEWSBEAM_OUTPUT", "/var/lib/newsbeam/output")
RUN_FILE = str(Path(__file__).with_name("newsbeam_run.py"))

with DAG(
    dag_id="newsbeam",
    description="newsbeam's batch run, hourly, then the feed-health alerts",
    schedule="17 * * * *",  # hourly, off the full hour, like deploy/cron/newsbeam
    start_date=datetime(2026, 12, 1),
    catchup=False,
    max_active_runs=1,  # runs share the output's commit lock: one at a time
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["newsbeam"],
) as dag:
    run = BeamRunPythonPipelineOperator(
        task_id="newsbeam_run",
        py_file=RUN_FILE,
        py_interpreter=NEWSBEAM_PYTHON,
        runner="DirectRunner",
        # Each becomes --key=value; newsbeam's own flags and Beam pipeline options alike.
        pipeline_options={"config": NEWSBEAM_CONFIG, "output": NEWSBEAM_OUTPUT},
    )
    health = BashOperator(
        task_id="feed_health",
        bash_command=f"{NEWSBEAM_PYTHON} -m pipeline report {NEWSBEAM_OUTPUT} --alerts",
    )
    run >> health
