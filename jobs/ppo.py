"""`ppo` job: RLHF with PPO (actor, critic, reference, reward model as Ray roles).

Commands:
    orchestrator run ppo                              # local smoke run (Ray started in-process)
    python -m jobs.ppo dry_run=true                   # print resolved config and plan, start nothing
    python jobs/ppo.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit ppo --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("ppo")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/ppo.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="ppo")
def main(cfg: DictConfig) -> None:
    hydra_main("ppo", cfg)


if __name__ == "__main__":
    precheck("ppo", sys.argv[1:])
    main()
