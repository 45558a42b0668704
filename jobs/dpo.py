"""`dpo` job: direct preference optimisation against a frozen reference.

Commands:
    orchestrator run dpo                              # local smoke run (Ray started in-process)
    python -m jobs.dpo dry_run=true                   # print resolved config and plan, start nothing
    python jobs/dpo.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit dpo --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("dpo")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/dpo.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="dpo")
def main(cfg: DictConfig) -> None:
    hydra_main("dpo", cfg)


if __name__ == "__main__":
    precheck("dpo", sys.argv[1:])
    main()
