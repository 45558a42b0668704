"""Reinforcement learning from feedback: PPO with Ray role actors, and the math the post-training kinds share.

Pure math (unit-tested against hand-computed values): :mod:`.advantages` (GAE, reward shaping, the
critic-free estimators grpo/dr_grpo/rloo/reinforce_pp/reinforce_pp_baseline), :mod:`.losses` (clipped
policy loss with DAPO clip-higher, value loss, entropy; token_mean/seq_mean_token_mean/
seq_mean_token_sum_norm aggregation), :mod:`.kl` (k1/k2/k3 estimators as a reward penalty or a loss
term, fixed/adaptive controllers), :mod:`.sampling` (DAPO dynamic sampling, overlong penalty),
:mod:`.preference` (Bradley-Terry, DPO, reward normaliser), :mod:`.masked` (masked statistics, whitening).

Rewards as code: :mod:`.rewards` (load ``module:function`` / ``file.py:function``, run concurrently with
timeouts, validate, weight) and :mod:`.reward_functions` (built-in verifiable rewards).

The RL kinds share :mod:`.controller` (the step loop, checkpoints via :mod:`.ppo_checkpoint`, exact resume,
recovery of a killed role), :mod:`.roles` (policy/critic/reward actors), :mod:`.placement` (Ray placement
group), :mod:`.rollout` (experience), :mod:`.batches` (generation prompts, token log-probs) and :mod:`.plan`
(dry-run layout). PPO: :mod:`.ppo`. Critic-free (``grpo``): :mod:`.grpo` (controller), :mod:`.grpo_roles`
(clipped-policy actor, reward-function role), :mod:`.groups` (group rollouts). The kinds themselves
(config, checks, runner) are ``orchestrator/kinds/{ppo,grpo}.py``.
"""
