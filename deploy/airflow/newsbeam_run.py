"""What Beam's Airflow operator runs: `newsbeam run` with the flags the operator gives it.

`BeamRunPythonPipelineOperator` starts `<py_interpreter> <py_file> --runner=... --key=value ...`;
newsbeam's command needs its subcommand first, so this file puts `run` in front and hands over to
the CLI. The interpreter is newsbeam's own environment (`NEWSBEAM_PYTHON` in newsbeam_dag.py), not
Airflow's: Airflow's pins and Beam's clash, so they never share one.
"""

import sys

from pipeline.cli import entry_point

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "run", *sys.argv[1:]]
    entry_point()
