"""`pretrain` job: pretrain a causal LM from scratch with DeepSpeed on a Ray worker group.

Commands:
    orchestrator run pretrain                              # local smoke run (Ray started in-process)
    python -m jobs.pretrain dry_run=true                   # print resolved config and plan, start nothing
    python jobs/pretrain.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit pretrain --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("pretrain")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/pretrain.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    hydra_main("pretrain", cfg)


if __name__ == "__main__":
    precheck("pretrain", sys.argv[1:])
    main()
