"""Reinforcement learning from feedback: PPO with Ray role actors, and the math the post-training kinds share.

Pure math (unit-tested against hand-computed values): :mod:`.advantages` (GAE, reward shaping),
:mod:`.losses` (clipped policy/value losses, entropy; token-mean aggregation), :mod:`.kl` (k1/k2/k3
estimators, fixed/adaptive controllers), :mod:`.preference` (Bradley-Terry, DPO, reward normaliser),
:mod:`.masked` (masked statistics, whitening).

PPO: :mod:`.roles` (actor/critic/reference/reward), :mod:`.placement` (Ray placement group),
:mod:`.rollout` (experience), :mod:`.batches` (generation prompts, token log-probs), :mod:`.ppo`
(controller), :mod:`.ppo_checkpoint`, :mod:`.plan` (dry-run layout). The ``ppo`` kind itself (config,
checks, runner) is ``orchestrator/kinds/ppo.py``.
"""
