"""`data_prep` job: raw text to a filtered, deduplicated, tokenized and packed dataset.

Commands:
    orchestrator run data_prep                              # local smoke run (Ray started in-process)
    python -m jobs.data_prep dry_run=true                   # print resolved config and plan, start nothing
    python jobs/data_prep.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit data_prep --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("data_prep")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/data_prep.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="data_prep")
def main(cfg: DictConfig) -> None:
    hydra_main("data_prep", cfg)


if __name__ == "__main__":
    precheck("data_prep", sys.argv[1:])
    main()
