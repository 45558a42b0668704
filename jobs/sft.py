"""`sft` job: supervised fine-tuning (loss on response tokens only).

Commands:
    orchestrator run sft                              # local smoke run (Ray started in-process)
    python -m jobs.sft dry_run=true                   # print resolved config and plan, start nothing
    python jobs/sft.py cluster=local_head             # on a running cluster (cluster/local/start.sh)
    orchestrator submit sft --address http://127.0.0.1:8265   # through the Ray Jobs API
"""

import sys

import hydra
from omegaconf import DictConfig

from orchestrator import kinds
from orchestrator.entry import hydra_main, precheck

kinds.get("sft")  # registers the schemas with Hydra's ConfigStore (the spec: orchestrator/kinds/sft.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sft")
def main(cfg: DictConfig) -> None:
    hydra_main("sft", cfg)


if __name__ == "__main__":
    precheck("sft", sys.argv[1:])
    main()
