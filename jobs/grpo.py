"""`grpo` job: critic-free RL (GRPO, RLOO, REINFORCE++) with reward functions.

Commands:
    orchestrator run grpo                              # local smoke run (Ray started in-process)
    python -m jobs.grpo dry_run=true                   # print resolved config and plan, start nothing
    python jobs/grpo.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit grpo --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("grpo")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/grpo.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="grpo")
def main(cfg: DictConfig) -> None:
    hydra_main("grpo", cfg)


if __name__ == "__main__":
    precheck("grpo", sys.argv[1:])
    main()
