"""`pipeline` job: a DAG of stages tracked as one MLflow parent run.

Commands:
    orchestrator run pipeline                              # local smoke run (Ray started in-process)
    python -m jobs.pipeline dry_run=true                   # print resolved config and plan, start nothing
    python jobs/pipeline.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit pipeline --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("pipeline")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/pipeline.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    hydra_main("pipeline", cfg)


if __name__ == "__main__":
    precheck("pipeline", sys.argv[1:])
    main()
