"""Ray plumbing: connect to or start Ray, worker groups, Jobs API submission."""
