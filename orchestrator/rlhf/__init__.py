"""Post-training: PPO (RLHF) with Ray roles, DPO, and the math they share.

Pure math (unit-tested against hand-computed values): :mod:`.advantages` (GAE, reward shaping),
:mod:`.losses` (clipped policy/value losses, entropy; token-mean aggregation), :mod:`.kl` (k1/k2/k3
estimators, fixed/adaptive controllers), :mod:`.preference` (Bradley-Terry, DPO, reward normaliser),
:mod:`.masked` (masked statistics, whitening).

Data: :mod:`.task` (the verifiable demo task), :mod:`.batches` (token batches, packing),
:mod:`.sources` and :mod:`.objectives` (SFT/RM/DPO on the shared training loop).

PPO: :mod:`.roles` (actor/critic/reference/reward), :mod:`.placement` (Ray placement group),
:mod:`.rollout` (experience), :mod:`.ppo` (controller), :mod:`.ppo_checkpoint`; entry points in :mod:`.jobs`.
"""
