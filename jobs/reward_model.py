"""`reward_model` job: train a scalar reward model on preference pairs.

Commands:
    orchestrator run reward_model                              # local smoke run (Ray started in-process)
    python -m jobs.reward_model dry_run=true                   # print resolved config and plan, start nothing
    python jobs/reward_model.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit reward_model --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("reward_model")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/reward_model.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="reward_model")
def main(cfg: DictConfig) -> None:
    hydra_main("reward_model", cfg)


if __name__ == "__main__":
    precheck("reward_model", sys.argv[1:])
    main()
